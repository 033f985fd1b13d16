use super::*;

#[test]
fn known_numbers() {
    assert_eq!(name(0), Some("read"));
    assert_eq!(name(35), Some("nanosleep"));
    assert_eq!(name(39), Some("getpid"));
    assert_eq!(name(110), Some("getppid"));
    assert_eq!(name(231), Some("exit_group"));
    assert_eq!(name(435), Some("clone3"));
    assert_eq!(name(469), Some("file_setattr"));
    assert_eq!(name(335), None);
    assert_eq!(label(335), "nr_335");
    assert_eq!(label(9999), "nr_9999");
}
