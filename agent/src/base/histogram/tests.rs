use super::*;

#[test]
fn observe_is_le_inclusive() {
    let mut h = Histogram::new(&[1.0, 2.0]);
    for v in [0.5, 1.0, 1.5, 2.0, 3.0] {
        h.observe(v);
    }
    assert_eq!(h.counts, vec![2, 2, 1]);
    assert_eq!(h.cumulative().collect::<Vec<_>>(), vec![(1.0, 2), (2.0, 4)]);
    assert_eq!(h.count, 5);
    assert_eq!(h.sum, 8.0);
}
