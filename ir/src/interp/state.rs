//! The state that persists between runs, the parameters' values, and how a tracked parameter's
//! value is held as its stored entries over a regenerated initial value.

use std::ops::ControlFlow;

use super::float::Float;
use crate::module::Module;
use crate::regen;

/// The values of a module's parameters, by `ParamId` index.
///
/// A dense parameter is one row-major buffer (PyTorch layout) in `values`. A *tracked*
/// parameter (Dropback, storage `tracked`) keeps only its stored entries in `tracked`: the
/// sorted flat indices where its value differs from its regenerated initial value `w0`, and the
/// values there; its `values` buffer is empty. Its effective (dense) value is `w0` with those
/// entries written over it, where `w0` is the parameter's `Init` under the regeneration spec
/// ([`regen`]) times `init_scale` (one `f32` product; the scale is 1 unless `decay_init`
/// shrinks the initial values between steps), converted to `T`. So the state of a tracked
/// parameter is O(stored entries), never O(its size).
#[derive(Clone, Debug, PartialEq)]
pub struct State<T> {
    pub values: Vec<Vec<T>>,
    pub tracked: Vec<Option<TrackedValues<T>>>,
    /// The factor the regenerated initial values of tracked parameters are multiplied by.
    pub init_scale: f32,
}

/// The stored entries of a tracked parameter: sorted, distinct flat indices and their values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackedValues<T> {
    pub indices: Vec<u32>,
    pub values: Vec<T>,
}

impl<T> TrackedValues<T> {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Whether a parameter is kept in the tracked (sparse) form.
pub fn is_tracked(p: &crate::module::Param) -> bool {
    matches!(p.storage, crate::module::Storage::Tracked { .. })
}

/// The module's seed (`train.seed`, 0 without a training spec).
pub fn module_seed(m: &Module) -> u64 {
    m.train.as_ref().map_or(0, |t| t.seed)
}

/// Parameter `p`'s initial value times `scale` (one `f32` product per element), as `T`.
pub fn initial_value<T: Float>(m: &Module, p: usize, scale: f32) -> Vec<T> {
    let param = &m.params[p];
    regen::init_values(
        param.init,
        module_seed(m),
        param.stream,
        param.ty.num_elements(),
    )
    .into_iter()
    .map(|x| T::from_f32(x * scale))
    .collect()
}

/// Whether two values are the same bits (so `-0` differs from `+0`, and a NaN is kept).
#[inline]
fn same_bits<T: Float>(a: T, b: T) -> bool {
    a.to_f64().to_bits() == b.to_f64().to_bits()
}

/// The entries of `value` that differ (bitwise) from `w0`.
pub(super) fn diff_entries<T: Float>(value: &[T], w0: &[T]) -> TrackedValues<T> {
    let mut t = TrackedValues {
        indices: Vec::new(),
        values: Vec::new(),
    };
    for (i, (&v, &w)) in value.iter().zip(w0).enumerate() {
        if !same_bits(v, w) {
            t.indices.push(i as u32);
            t.values.push(v);
        }
    }
    t
}

impl<T: Float> State<T> {
    /// Every dense parameter's `Init` evaluated with the regeneration spec
    /// ([`regen::init_values`]) under the module's seed (`train.seed`, 0 without a training
    /// spec) and the parameter's stream, converted from `f32`; every tracked parameter with no
    /// stored entries (its effective value is its initial value) and `init_scale` 1.
    pub fn initial(m: &Module) -> State<T> {
        let mut values = Vec::with_capacity(m.params.len());
        let mut tracked = Vec::with_capacity(m.params.len());
        for (i, p) in m.params.iter().enumerate() {
            if is_tracked(p) {
                values.push(Vec::new());
                tracked.push(Some(TrackedValues::default()));
            } else {
                values.push(initial_value(m, i, 1.0));
                tracked.push(None);
            }
        }
        State {
            values,
            tracked,
            init_scale: 1.0,
        }
    }

    /// A state holding every parameter densely (for modules without tracked parameters).
    pub fn dense(values: Vec<Vec<T>>) -> State<T> {
        State {
            tracked: vec![None; values.len()],
            values,
            init_scale: 1.0,
        }
    }

    /// Parameter `p`'s effective value as a dense buffer (a copy; regenerated for a tracked one).
    pub fn dense_value(&self, m: &Module, p: usize) -> Vec<T> {
        match &self.tracked[p] {
            None => self.values[p].clone(),
            Some(t) => {
                let mut out = initial_value(m, p, self.init_scale);
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    out[i as usize] = v;
                }
                out
            }
        }
    }

    /// Parameter `p`'s effective value in consecutive windows of at most `window` elements,
    /// each passed to `visit` with its start: the value [`State::dense_value`] makes whole, in
    /// bounded memory (a tracked weight may be far larger than the memory of the machine).
    pub fn visit_dense_value(
        &self,
        m: &Module,
        p: usize,
        window: usize,
        mut visit: impl FnMut(usize, &[T]),
    ) {
        let Some(t) = &self.tracked[p] else {
            for (j, chunk) in self.values[p].chunks(window.max(1)).enumerate() {
                visit(j * window.max(1), chunk);
            }
            return;
        };
        let mut out: Vec<T> = Vec::new();
        let mut entry = 0;
        let _ = initial_windows(m, p, window, |start, raw| {
            out.clear();
            out.extend(raw.iter().map(|&x| T::from_f32(x * self.init_scale)));
            while entry < t.indices.len() && (t.indices[entry] as usize) < start + raw.len() {
                out[t.indices[entry] as usize - start] = t.values[entry];
                entry += 1;
            }
            visit(start, &out);
            ControlFlow::Continue(())
        });
    }

    /// Give parameter `p` the effective value `value` (a tracked parameter keeps the entries
    /// that differ from its initial value under the current `init_scale`, however many).
    pub fn set_dense_value(&mut self, m: &Module, p: usize, value: Vec<T>) {
        match &mut self.tracked[p] {
            None => self.values[p] = value,
            Some(t) => {
                let w0 = initial_value::<T>(m, p, self.init_scale);
                *t = diff_entries(&value, &w0);
            }
        }
    }

    /// Number of values stored for parameter `p`: its size when dense, its entries when tracked.
    pub fn stored_len(&self, p: usize) -> usize {
        match &self.tracked[p] {
            None => self.values[p].len(),
            Some(t) => t.len(),
        }
    }
}

/// How many of a parameter's effective values are exactly zero, counted without remaking a
/// tracked parameter's initial value each time: the zeros of its scaled initial value are
/// found once (for its seed, stream, size and scale) and kept as positions (few: a uniform
/// draw is rarely exactly zero), and each count is those off the entries plus the entries'
/// own. A parameter whose initial value has more zeros than [`ZeroCounts::KEPT`] is counted
/// window by window each time instead.
#[derive(Clone, Debug, Default)]
pub struct ZeroCounts {
    initial: std::collections::HashMap<usize, InitialZeros>,
}

#[derive(Clone, Debug)]
struct InitialZeros {
    of: (u64, u64, usize, crate::module::Init, u32),
    positions: Option<Vec<u32>>,
}

impl ZeroCounts {
    /// The most zero positions kept for one parameter.
    pub const KEPT: usize = 1 << 16;

    /// The number of exact zeros (either sign) in parameter `p`'s effective value.
    pub fn count(&mut self, m: &Module, state: &State<f32>, p: usize) -> usize {
        let Some(t) = &state.tracked[p] else {
            return state.values[p].iter().filter(|&&x| x == 0.0).count();
        };
        let param = &m.params[p];
        let n = param.ty.num_elements();
        let of = (
            module_seed(m),
            param.stream,
            n,
            param.init,
            state.init_scale.to_bits(),
        );
        let known = match self.initial.get(&p) {
            Some(z) if z.of == of => z,
            _ => {
                let positions = initial_zeros(m, p, state.init_scale);
                self.initial
                    .entry(p)
                    .insert_entry(InitialZeros { of, positions })
                    .into_mut()
            }
        };
        let Some(zeros) = &known.positions else {
            let mut zeros = 0;
            state.visit_dense_value(m, p, 1 << 20, |_, part| {
                zeros += part.iter().filter(|&&x| x == 0.0).count();
            });
            return zeros;
        };
        let under_entries = zeros
            .iter()
            .filter(|z| t.indices.binary_search(z).is_ok())
            .count();
        let in_entries = t.values.iter().filter(|&&x| x == 0.0).count();
        zeros.len() - under_entries + in_entries
    }
}

/// The positions where parameter `p`'s initial value times `scale` is zero, if at most
/// [`ZeroCounts::KEPT`]; made window by window.
fn initial_zeros(m: &Module, p: usize, scale: f32) -> Option<Vec<u32>> {
    let mut zeros = Vec::new();
    let found = initial_windows(m, p, 1 << 20, |start, raw| {
        for (i, &x) in raw.iter().enumerate() {
            if x * scale == 0.0 {
                match u32::try_from(start + i) {
                    Ok(at) if zeros.len() < ZeroCounts::KEPT => zeros.push(at),
                    _ => return ControlFlow::Break(()),
                }
            }
        }
        ControlFlow::Continue(())
    });
    found.is_continue().then_some(zeros)
}

/// Parameter `p`'s initial value (unscaled) in consecutive windows of at most `window`
/// elements, each passed to `visit` with its start until it breaks.
fn initial_windows(
    m: &Module,
    p: usize,
    window: usize,
    mut visit: impl FnMut(usize, &[f32]) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let param = &m.params[p];
    let n = param.ty.num_elements();
    let mut raw = vec![0f32; window.max(1).min(n)];
    let mut start = 0;
    while start < n {
        let len = raw.len().min(n - start);
        let part = &mut raw[..len];
        regen::init_values_at(param.init, module_seed(m), param.stream, start as u64, part);
        visit(start, part)?;
        start += len;
    }
    ControlFlow::Continue(())
}
