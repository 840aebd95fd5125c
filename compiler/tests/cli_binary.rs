//! printf's `%b` and `%m` write bytes that need not be UTF-8: ptap writes
//! them to the output as they are (the spec tests compare text).
mod support;

#[test]
fn binary_output_is_written_as_is() {
    let out = support::out_dir().join("binary.out");
    let status = support::ptap()
        .args([
            "-o",
            out.to_str().unwrap(),
            "-e",
            "probe begin { printf(\"%1b%2b|%b\", 0xff, 0x80e9, -2); exit() }",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&out).unwrap();
    let mut want = vec![0xff, 0xe9, 0x80, b'|'];
    want.extend((-2i64).to_le_bytes());
    assert_eq!(bytes, want);
}
