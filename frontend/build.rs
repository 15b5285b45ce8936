fn main() {
    // Generates src/grammar.lalrpop into OUT_DIR (never committed).
    lalrpop::Configuration::new()
        .use_cargo_dir_conventions()
        .emit_rerun_directives(true)
        .process()
        .expect("lalrpop failed to process src/grammar.lalrpop");
}
