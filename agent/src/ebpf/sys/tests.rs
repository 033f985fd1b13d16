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
