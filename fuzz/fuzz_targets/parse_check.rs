//! Every input must give a parse tree / checked script or diagnostics, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let opts = ptap_lang::Options {
            guru: data.len() % 2 == 0,
            args: vec!["1".into(), "a".into()],
            defines: vec![],
        };
        let _ = ptap_lang::render_p1("fuzz.pt", text);
        let _ = ptap_lang::render_p2("fuzz.pt", text, &opts);
    }
});
