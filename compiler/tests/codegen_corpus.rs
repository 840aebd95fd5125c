//! Every valid script of the front end's corpus (tests/lang/ok/*.pt) goes
//! through the code generator, as a probe module and with the JIT: it
//! compiles, or fails with a clear "cannot compile X" for a construct not
//! lowered yet — never an internal (Cranelift) error or a panic.
use ptap_compiler::CodegenError;
use ptap_lang::Options;

fn options(text: &str) -> Options {
    let mut o = Options::default();
    for line in text.lines() {
        if let Some(a) = line.strip_prefix("# ptap-args:") {
            o.args = a.split_whitespace().map(str::to_string).collect();
        } else if let Some(d) = line.strip_prefix("# ptap-define:") {
            o.defines.push(d.trim().to_string());
        } else if line.trim() == "# ptap-guru" {
            o.guru = true;
        }
    }
    o
}

#[test]
fn every_valid_script_compiles_or_names_what_is_missing() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lang/ok");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pt"))
        .collect();
    paths.sort();
    assert!(paths.len() > 20, "corpus not found in {}", dir.display());
    let (mut ok, mut unsupported) = (Vec::new(), Vec::new());
    for p in &paths {
        let text = std::fs::read_to_string(p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(checked) = ptap_lang::frontend(&name, &text, &options(&text)) else {
            continue; // a front-end golden that expects diagnostics elsewhere
        };
        let obj = ptap_compiler::emit_object(&checked);
        let jit = ptap_compiler::Jit::new(&checked);
        match (&obj, &jit) {
            (Ok(bytes), Ok(_)) => {
                ptap_rt_core::script::load::load(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                ok.push(name);
            }
            (
                Err(CodegenError::Unsupported { what, .. }),
                Err(CodegenError::Unsupported { .. }),
            )
            | (Err(CodegenError::TargetVar { what, .. }), Err(CodegenError::TargetVar { .. })) => {
                unsupported.push(format!("{name}: {what}"))
            }
            _ => panic!(
                "{name}: object {:?} / jit {:?}",
                obj.as_ref().err(),
                jit.as_ref().err()
            ),
        }
    }
    eprintln!("compiled {}, not yet: {:#?}", ok.len(), unsupported);
    assert!(ok.len() > unsupported.len(), "most of the corpus compiles");
}
