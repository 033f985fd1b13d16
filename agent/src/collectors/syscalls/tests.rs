use super::*;

#[test]
fn known_numbers() {
    assert_eq!(label(0), "read");
    assert_eq!(label(35), "nanosleep");
    assert_eq!(label(39), "getpid");
    assert_eq!(label(110), "getppid");
    assert_eq!(label(231), "exit_group");
    assert_eq!(label(435), "clone3");
    assert_eq!(label(469), "file_setattr");
    // 335 and 336 (uretprobe, uprobe) came with 6.11 and 6.17; the table of the `syscalls`
    // crate has them. 337..=423 are unused on x86_64.
    assert_eq!(label(335), "uretprobe");
    assert_eq!(label(400), "nr_400");
    assert_eq!(label(9999), "nr_9999");
}
