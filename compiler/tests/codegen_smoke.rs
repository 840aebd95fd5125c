mod codegen_support;
use codegen_support::*;

#[test]
fn smoke() {
    assert_eq!(begin("print(1 + 2)"), "3\n");
}
