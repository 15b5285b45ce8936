//! Checker behaviour: error collection without cascades, defaults, and the checked model.

use sparsec_frontend::{check_source, CheckedModel};
use sparsec_ir::spec::{DataSpec, Schedule};

fn codes(src: &str) -> Vec<String> {
    match check_source(src) {
        Ok(_) => Vec::new(),
        Err(d) => d.into_iter().filter_map(|d| d.code).collect(),
    }
}

fn ok(src: &str) -> CheckedModel {
    check_source(src).unwrap_or_else(|d| panic!("{:#?}", d))
}

const TRAIN: &str = "train { optimizer: sgd(lr: 0.1) }\n";

#[test]
fn defaults() {
    let m = ok(&format!(
        "model m {{ input x: [784] o = dense(x, 10) loss softmax_cross_entropy(o) }}\n{TRAIN}"
    ));
    assert_eq!(m.data, DataSpec::FashionMnist { dir: None });
    assert_eq!(m.train.epochs, 10);
    assert_eq!(m.train.batch, 64);
    assert_eq!(m.train.seed, 0);
    assert_eq!(m.train.log_every, 100);
    assert_eq!(m.train.schedule, Schedule::Constant);
    assert_eq!(m.train.optimizer.momentum, 0.0);
    assert!(!m.train.optimizer.nesterov);
    assert!(m.method.is_none());
    assert_eq!(m.param_count(), 7850);
}

#[test]
fn no_cascade_from_a_failed_layer() {
    // fc1 fails (undefined input); h1, fc2 (whose declared width would be wrong) and the loss
    // are skipped silently, and the method's selectors are not resolved.
    let src = format!(
        "model m {{ input x: [784]\n fc1 = dense(nope, 100)\n h1 = relu(fc1)\n fc2 = dense(h1, 7 -> 10)\n \
         loss softmax_cross_entropy(fc2) }}\n{TRAIN}method dropback {{ k: 10, on: [fc*] }}\n"
    );
    assert_eq!(codes(&src), vec!["E0202"]);
}

#[test]
fn independent_errors_are_all_reported() {
    let src = "model m { input x: [784]\n a = dense(x, 0)\n b = rleu(x)\n c = dense(x, 10, bias: 1)\n \
               loss softmax_cross_entropy(c) }\ntrain { epochs: 0, batch: -1, optimizer: sgd(lr: 0) }\n";
    let c = codes(src);
    for code in ["E0408", "E0204", "E0404"] {
        assert!(c.contains(&code.to_string()), "{code} missing from {c:?}");
    }
    assert!(c.iter().filter(|c| *c == "E0408").count() >= 4, "{c:?}");
}

#[test]
fn syntax_errors_come_alone() {
    let src = "model m { input x: [784] o = dense(x 10 :) loss softmax_cross_entropy(o) }\n";
    // No E0212 (missing train): the checker does not run after syntax errors.
    assert_eq!(codes(src), vec!["E0101"]);
}

#[test]
fn loss_must_follow_its_logits() {
    let src = format!(
        "model m {{ input x: [784] loss softmax_cross_entropy(o) o = dense(x, 10) }}\n{TRAIN}"
    );
    assert_eq!(codes(&src), vec!["E0203"]);
}

#[test]
fn unused_layers_only_with_a_valid_loss() {
    // No loss: only E0207, not "o is never used".
    let src = format!("model m {{ input x: [784] o = dense(x, 10) }}\n{TRAIN}");
    assert_eq!(codes(&src), vec!["E0207"]);
    let src = format!("model m {{ input x: [784] o = dense(x, 10) p = relu(x) loss softmax_cross_entropy(o) }}\n{TRAIN}");
    assert_eq!(codes(&src), vec!["E0210"]);
}

#[test]
fn overflow_is_an_error_not_a_panic() {
    let src = format!(
        "model m {{ input x: [3037000500, 3037000500] f = flatten(x) o = dense(f, 10) \
         loss softmax_cross_entropy(o) }}\ndata synthetic\n{TRAIN}"
    );
    assert_eq!(codes(&src), vec!["E0309"]);
    let src = format!(
        "model m {{ input x: [65536] o = dense(x, 65536) p = dense(o, 10) loss softmax_cross_entropy(p) }}\n\
         data synthetic\n{TRAIN}"
    );
    assert_eq!(codes(&src), vec!["E0309"], "a 2^32-element weight");
    let src = format!(
        "model m {{ input x: [1, 8, 8] c = conv2d(x, 4, kernel: 3, padding: 9223372036854775807) f = flatten(c) \
         o = dense(f, 10) loss softmax_cross_entropy(o) }}\ndata synthetic\n{TRAIN}"
    );
    assert!(!codes(&src).is_empty());
}

#[test]
fn selectors_resolve_in_declaration_order() {
    let src = format!(
        "model m {{ input x: [1, 8, 8]\n c1 = conv2d(x, 4, kernel: 3)\n f = flatten(c1)\n fc1 = dense(f, 20)\n \
         fc2 = dense(fc1, 10)\n loss softmax_cross_entropy(fc2) }}\ndata synthetic\n{TRAIN}\
         method dropback {{ k: 100, on: [fc2, @conv2d, fc*] }}\n"
    );
    let m = ok(&src);
    assert_eq!(m.method.unwrap().layers, vec!["c1", "fc1", "fc2"]);
}

#[test]
fn globs_skip_the_protected_output_layer() {
    let src = format!(
        "model m {{ input x: [784]\n fc1 = dense(x, 20)\n fc2 = dense(fc1, 10)\n loss softmax_cross_entropy(fc2) }}\n\
         {TRAIN}method prunetrain {{ on: fc* }}\n"
    );
    assert_eq!(ok(&src).method.unwrap().layers, vec!["fc1"]);
    let src = src.replace("on: fc*", "on: fc2");
    assert_eq!(codes(&src), vec!["E0504"]);
}

#[test]
fn admm_keep_map_without_on_selects_its_keys() {
    let src = format!(
        "model m {{ input x: [784]\n fc1 = dense(x, 20)\n fc2 = dense(fc1, 10)\n loss softmax_cross_entropy(fc2) }}\n\
         {TRAIN}method admm {{ keep: {{ fc2: 0.5 }}, rounds: 1, epochs_per_round: 1, retrain_epochs: 0 }}\n"
    );
    assert_eq!(ok(&src).method.unwrap().layers, vec!["fc2"]);
    let bad = src.replace("fc2: 0.5", "fc3: 0.5");
    assert_eq!(codes(&bad), vec!["E0503"]);
}

#[test]
fn floats_accept_integers_and_reject_underflow() {
    let src = "model m { input x: [784] o = dense(x, 10) loss softmax_cross_entropy(o) }\ntrain { optimizer: sgd(lr: 1) }\n".to_string();
    assert_eq!(ok(&src).train.optimizer.lr, 1.0);
    let src = src.replace("lr: 1", "lr: 1e-400");
    assert_eq!(codes(&src), vec!["E0407"]);
}

#[test]
fn synthetic_data_smaller_than_a_batch_is_an_error() {
    let src = "model m { input x: [4]\n o = dense(x, 2)\n loss softmax_cross_entropy(o) }\n\
               data synthetic { train_samples: 4, test_samples: 2 }\n\
               train { batch: 8, optimizer: sgd(lr: 0.1) }\n";
    assert_eq!(codes(src), vec!["E0415"]);
    assert!(ok(&src.replace("batch: 8", "batch: 4")).train.batch == 4);
}

/// A model stores at most 2^32 parameters, but a Dropback method's layers are regenerated, not
/// stored: such a model may hold more, up to 2^40 in all.
#[test]
fn parameter_limits_count_what_is_stored() {
    // Five 2^30-parameter layers (plus biases): more than 2^32 in all.
    let mut layers = String::from("h0 = dense(x, 32768) ");
    for i in 1..5 {
        layers.push_str(&format!("h{i} = dense(h{}, 32768) ", i - 1));
    }
    let model = format!(
        "model m {{ input x: [32768] {layers} o = dense(h4, 10) loss softmax_cross_entropy(o) }}\n\
         data synthetic\n{TRAIN}"
    );
    assert_eq!(codes(&model), vec!["E0310"]);
    let dropback = "method dropback { k: 1_000_000, on: [h*] }";
    assert_eq!(codes(&format!("{model}\n{dropback}")), Vec::<String>::new());
    // Dropback on some layers only: the others are still stored.
    let some = "method dropback { k: 1_000_000, on: [h0] }";
    assert_eq!(codes(&format!("{model}\n{some}")), vec!["E0310"]);
    // 1025 such layers: more than 2^40 parameters, whatever the method.
    let mut layers = String::from("h0 = dense(x, 32768) ");
    for i in 1..1025 {
        layers.push_str(&format!("h{i} = dense(h{}, 32768) ", i - 1));
    }
    let model = format!(
        "model m {{ input x: [32768] {layers} o = dense(h1024, 10) loss softmax_cross_entropy(o) }}\n\
         data synthetic\n{TRAIN}\n{dropback}"
    );
    assert_eq!(codes(&model), vec!["E0313"]);
}
