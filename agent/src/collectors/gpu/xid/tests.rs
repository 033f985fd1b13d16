use super::*;

#[test]
fn the_issues_codes_are_decoded_with_the_catalogs_action() {
    for (code, want) in [
        (13, action::RESTART_APP),
        (31, action::RESTART_APP),
        (43, action::NONE),
        (45, action::FOLLOW_OTHER_XID),
        (48, action::RESET_GPU),
        (61, action::CONTACT_SUPPORT),
        (62, action::RESET_GPU),
        (63, action::NONE),
        (64, action::RESET_GPU),
        (68, action::RESTART_APP),
        (74, action::CHECK_NVLINK),
        (79, action::REBOOT_NODE),
        (92, action::NONE),
        (93, action::NONE),
        (94, action::RESTART_APP),
        (95, action::RESET_GPU),
        (119, action::RESET_GPU),
        (120, action::RESET_GPU),
        (154, action::SEE_RECOVERY_ACTION),
    ] {
        let (name, action) = decode(code);
        assert_eq!(action, want, "XID {code}");
        assert_ne!(name, "unknown", "XID {code}");
    }
    assert_eq!(decode(79).0, "GPU has fallen off the bus");
    assert_eq!(decode(7), ("unknown", action::UNKNOWN));
}

#[test]
fn each_code_is_in_the_table_once() {
    let mut codes: Vec<u64> = CATALOG.iter().map(|(c, _, _)| *c).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), CATALOG.len());
}
