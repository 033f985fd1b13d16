use super::*;

const EXIT_FORMAT: &str = "name: sched_process_exit
ID: 300
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;
";

#[test]
fn parses_offsets() {
    assert_eq!(parse_field_offset(EXIT_FORMAT, "pid"), Some(24));
    assert_eq!(parse_field_offset(EXIT_FORMAT, "group_dead"), Some(32));
    assert_eq!(parse_field_offset(EXIT_FORMAT, "comm"), Some(8));
    assert_eq!(parse_field_offset(EXIT_FORMAT, "prio"), None);
}

#[test]
fn task_report_max_from_the_switch_format() {
    let fmt = "print fmt: \"prev_state=%s%s\", (REC->prev_state & ((((0x00000000 | 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) - 1)) ? __print_flags(REC->prev_state & 1, \"|\", { 0x00000001, \"S\" }) : \"R\", REC->prev_state & (((0x00000000 | 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) ? \"+\" : \"\", REC->next_comm";
    assert_eq!(parse_report_max(fmt), Some(0x100));
    assert_eq!(parse_report_max("print fmt: \"x\""), None);
}
