//! The `f64` reference interpreter on a module's `@forward` and `@train_step`, for gradient
//! checks: a random batch, the loss at a state, one training step.

use sparsec_ir::interp::{Input, Interpreter, State};
use sparsec_ir::Module;

use crate::rng::Rng;

/// One batch of inputs for `@forward`/`@train_step`: random x in [lo, hi), labels `i·7 mod C`.
pub struct Batch {
    pub x: Vec<f64>,
    pub labels: Vec<i32>,
}

impl Batch {
    pub fn random(m: &Module, rng: &mut Rng, lo: f64, hi: f64) -> Batch {
        let f = m.func("forward").expect("@forward");
        let n = f.args[0].ty.num_elements();
        let b = f.args[1].ty.shape[0];
        let logits = f.value_type(f.results[1]);
        let classes = logits.shape[1];
        Batch {
            x: rng.vec(n, lo, hi),
            labels: (0..b).map(|i| ((i * 7 + 1) % classes) as i32).collect(),
        }
    }
}

/// The loss of `@forward` at the given state.
pub fn loss(m: &Module, st: &State<f64>, batch: &Batch) -> f64 {
    let mut it = Interpreter::<f64>::new(m, "forward").expect("interpreter");
    let mut st = st.clone();
    let out = it
        .run(
            &mut st,
            &[Input::Float(&batch.x), Input::Int(&batch.labels)],
        )
        .expect("forward runs");
    out[0].as_float().expect("f32 loss").data[0]
}

/// Run `@train_step` once with the given learning rate; the stores are applied to `st`.
/// Returns the loss.
pub fn step(t: &Module, st: &mut State<f64>, batch: &Batch, lr: f64) -> f64 {
    let mut it = Interpreter::<f64>::new(t, "train_step").expect("interpreter");
    let out = it
        .run(
            st,
            &[
                Input::Float(&batch.x),
                Input::Int(&batch.labels),
                Input::Float(&[lr]),
            ],
        )
        .expect("train step runs");
    assert_eq!(out.len(), 2, "train step returns (loss, logits)");
    out[0].as_float().expect("f32 loss").data[0]
}
