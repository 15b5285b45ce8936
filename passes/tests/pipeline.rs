//! The pass pipeline: a dump printed between two passes that end at the same stage resumes
//! where it was printed, and a finished module is left alone.

use sparsec_ir::{parse_module, print_module, Module, Stage};
use sparsec_passes::Pipeline;
use sparsec_test_support::examples;

fn lowered(example: &str) -> Module {
    examples::lower(&examples::example(example), None)
}

fn to_stage(module: Module, stage: Stage, dumps: &mut Vec<(String, String)>) -> Module {
    let pipeline = Pipeline::for_module(&module, None);
    pipeline
        .run(module, stage, &mut |pass, m| {
            dumps.push((pass.to_owned(), print_module(m)))
        })
        .expect("compiles")
}

#[test]
fn a_dump_printed_after_autodiff_still_gets_the_selection() {
    let module = lowered("lenet300_dropback");
    let mut dumps = Vec::new();
    let direct = to_stage(module, Stage::Train, &mut dumps);
    let passes: Vec<&str> = dumps.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(passes, ["autodiff", "dropback"]);

    // The autodiff dump says `stage=train`, yet it has no selection: the dropback pass runs.
    let after_autodiff = parse_module(&dumps[0].1).expect("the dump parses");
    assert_eq!(after_autodiff.stage, Stage::Train);
    let mut again = Vec::new();
    let resumed = to_stage(after_autodiff, Stage::Train, &mut again);
    assert_eq!(again.len(), 1, "only the dropback pass runs");
    assert_eq!(again[0].0, "dropback");
    assert_eq!(print_module(&resumed), print_module(&direct));

    // The finished module runs nothing more at its own stage.
    let mut none = Vec::new();
    let same = to_stage(direct.clone(), Stage::Train, &mut none);
    assert!(none.is_empty());
    assert_eq!(same, direct);
}

#[test]
fn a_dense_program_runs_autodiff_then_saturation() {
    let mut dumps = Vec::new();
    let opt = to_stage(lowered("lenet300"), Stage::Opt, &mut dumps);
    let passes: Vec<&str> = dumps.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(passes, ["autodiff", "eqsat"]);
    assert_eq!(opt.stage, Stage::Opt);
}
