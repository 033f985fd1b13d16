#[test]
fn the_profile_is_the_end_of_the_mig_devices_name() {
    assert_eq!(
        super::profile("NVIDIA H100 80GB HBM3 MIG 1g.10gb"),
        "1g.10gb"
    );
    assert_eq!(
        super::profile("NVIDIA A100-SXM4-40GB MIG 3g.20gb"),
        "3g.20gb"
    );
    assert_eq!(super::profile("odd"), "odd");
}
