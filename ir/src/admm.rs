//! Progressive ADMM's schedule (docs/methods.md §3, docs/language.md): which phase each epoch
//! of a run belongs to, ρ in each round, and each stage's keep ratios. One definition for the
//! verifier, the compile side (which builds the step of the phase the method line names) and
//! the run side (which moves the program from phase to phase).
//!
//! A run of `epochs` epochs is laid out from its end: `S` stages (`S` = the number of `stages`,
//! or 1 for one-shot), each `rounds · epochs_per_round` epochs of training under the penalty
//! followed by `retrain_epochs` epochs of masked retraining; the epochs before the first stage
//! are dense pretraining. The run must have room for the stages.

use crate::spec::{KeepRatio, Method};

/// Where in the schedule an epoch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Dense training before the first stage.
    Pretrain,
    /// Round `round` of stage `stage` (both 1-based): training under the penalty with ρ of
    /// that round.
    Admm { stage: u64, round: u64 },
    /// Masked retraining after stage `stage`'s hard prune.
    Retrain { stage: u64 },
}

impl Phase {
    /// Whether the selected weights have a fixed mask: after the first hard prune, and in every
    /// later stage (which keeps the previous stage's zeros).
    pub fn masked(self) -> bool {
        self.mask_stage().is_some()
    }

    /// The stage whose hard prune fixed the mask in force: the previous stage's in a later
    /// stage's rounds, this stage's in its retraining; `None` before the first hard prune.
    pub fn mask_stage(self) -> Option<u64> {
        match self {
            Phase::Pretrain => None,
            Phase::Admm { stage, .. } => stage.checked_sub(1).filter(|&s| s > 0),
            Phase::Retrain { stage } => Some(stage),
        }
    }

    /// The stage the phase belongs to (`None` before the first).
    pub fn stage(self) -> Option<u64> {
        match self {
            Phase::Pretrain => None,
            Phase::Admm { stage, .. } | Phase::Retrain { stage } => Some(stage),
        }
    }
}

impl std::fmt::Display for Phase {
    /// The method line's spelling (`at=...`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Pretrain => write!(f, "pretrain"),
            Phase::Admm { stage, round } => write!(f, "admm(stage={stage}, round={round})"),
            Phase::Retrain { stage } => write!(f, "retrain(stage={stage})"),
        }
    }
}

/// An ADMM method's schedule over a run of a given length.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub keep: KeepRatio,
    pub rho: f64,
    pub rho_growth: f64,
    pub rounds: u64,
    pub epochs_per_round: u64,
    pub retrain_epochs: u64,
    /// The progressive chain's compression targets (empty: one-shot).
    pub targets: Vec<f64>,
    /// Epochs of dense training before the first stage.
    pub pretrain_epochs: u64,
}

impl Schedule {
    /// The schedule of `method` (an `admm` one) over `epochs` epochs, or why it does not fit.
    pub fn new(method: &Method, epochs: u64) -> Result<Schedule, String> {
        let Method::Admm {
            keep,
            rho,
            rho_growth,
            rounds,
            epochs_per_round,
            retrain_epochs,
            stages,
            ..
        } = method
        else {
            return Err(format!("`{}` is not an ADMM method", method.name()));
        };
        if *rounds == 0 || *epochs_per_round == 0 {
            return Err("ADMM needs at least one round of at least one epoch".into());
        }
        let stage_count = stages.len().max(1) as u64;
        let needed = rounds
            .checked_mul(*epochs_per_round)
            .and_then(|e| e.checked_add(*retrain_epochs))
            .and_then(|e| e.checked_mul(stage_count))
            .ok_or("ADMM's schedule is too long to count")?;
        if needed > epochs {
            return Err(format!(
                "ADMM's schedule needs {needed} epochs ({stage_count} stage{} × ({rounds} rounds × \
                 {epochs_per_round} epochs + {retrain_epochs} retraining epochs)), but the run \
                 has {epochs}",
                if stage_count == 1 { "" } else { "s" }
            ));
        }
        Ok(Schedule {
            keep: keep.clone(),
            rho: *rho,
            rho_growth: *rho_growth,
            rounds: *rounds,
            epochs_per_round: *epochs_per_round,
            retrain_epochs: *retrain_epochs,
            targets: stages.clone(),
            pretrain_epochs: epochs - needed,
        })
    }

    /// How many stages the run goes through (1 for one-shot).
    pub fn stages(&self) -> u64 {
        self.targets.len().max(1) as u64
    }

    fn stage_epochs(&self) -> u64 {
        self.rounds * self.epochs_per_round + self.retrain_epochs
    }

    /// The phase of epoch `epoch` (0-based). Epochs past the schedule's end are in the last
    /// stage's retraining: a run whose last stage has no retraining ends hard-pruned.
    pub fn phase_at(&self, epoch: u64) -> Phase {
        let Some(into) = epoch.checked_sub(self.pretrain_epochs) else {
            return Phase::Pretrain;
        };
        let stage = into / self.stage_epochs();
        if stage >= self.stages() {
            return Phase::Retrain {
                stage: self.stages(),
            };
        }
        let within = into % self.stage_epochs();
        let stage = stage + 1;
        if within < self.rounds * self.epochs_per_round {
            Phase::Admm {
                stage,
                round: within / self.epochs_per_round + 1,
            }
        } else {
            Phase::Retrain { stage }
        }
    }

    /// ρ while `phase` trains: `rho · rho_growth^(round − 1)` in an ADMM round (ρ starts again
    /// at `rho` in every stage), `None` outside the rounds (no penalty).
    pub fn rho_at(&self, phase: Phase) -> Option<f64> {
        rho_in(self.rho, self.rho_growth, phase)
    }

    /// The fraction of `layer`'s weights stage `stage` (1-based) keeps. `keep` is the last
    /// stage's; an earlier stage with target `c_s` keeps `keep · c_S / c_s` (the same per-layer
    /// proportions, scaled so the compression follows the targets), at most all of them.
    pub fn keep_ratio(&self, layer: &str, stage: u64) -> Option<f64> {
        let base = match &self.keep {
            KeepRatio::All(r) => *r,
            KeepRatio::PerLayer(layers) => layers.iter().find(|(l, _)| l == layer)?.1,
        };
        let (Some(&last), Some(&this)) = (
            self.targets.last(),
            self.targets.get(stage.saturating_sub(1) as usize),
        ) else {
            return Some(base);
        };
        Some((base * last / this).min(1.0))
    }
}

/// [`Schedule::rho_at`] from the method's `rho` and `rho_growth` alone.
pub fn rho_in(rho: f64, rho_growth: f64, phase: Phase) -> Option<f64> {
    match phase {
        Phase::Admm { round, .. } => Some((1..round).fold(rho, |r, _| r * rho_growth)),
        _ => None,
    }
}

/// How many of `n` weights a keep ratio keeps: `round(ratio · n)`, at least 1 and at most `n`.
pub fn kept(ratio: f64, n: usize) -> usize {
    ((ratio * n as f64).round() as usize).clamp(1.min(n), n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(epochs: u64, stages: Vec<f64>, retrain: u64) -> Schedule {
        let method = Method::Admm {
            keep: KeepRatio::PerLayer(vec![("a".into(), 0.2), ("b".into(), 0.01)]),
            rho: 1e-3,
            rho_growth: 2.0,
            rounds: 3,
            epochs_per_round: 2,
            retrain_epochs: retrain,
            stages,
            at: None,
        };
        Schedule::new(&method, epochs).unwrap()
    }

    #[test]
    fn epochs_are_laid_out_from_the_end() {
        let s = schedule(10, Vec::new(), 2);
        assert_eq!(s.pretrain_epochs, 2);
        let phases: Vec<Phase> = (0..11).map(|e| s.phase_at(e)).collect();
        use Phase::*;
        assert_eq!(
            phases,
            [
                Pretrain,
                Pretrain,
                Admm { stage: 1, round: 1 },
                Admm { stage: 1, round: 1 },
                Admm { stage: 1, round: 2 },
                Admm { stage: 1, round: 2 },
                Admm { stage: 1, round: 3 },
                Admm { stage: 1, round: 3 },
                Retrain { stage: 1 },
                Retrain { stage: 1 },
                Retrain { stage: 1 },
            ]
        );
        let chain = schedule(16, vec![10.0, 20.0], 2);
        assert_eq!(chain.pretrain_epochs, 0);
        assert_eq!(chain.phase_at(8), Admm { stage: 2, round: 1 });
        assert_eq!(chain.phase_at(15), Retrain { stage: 2 });
        assert!(Schedule::new(
            &Method::Admm {
                keep: KeepRatio::All(0.1),
                rho: 1.0,
                rho_growth: 1.0,
                rounds: 3,
                epochs_per_round: 2,
                retrain_epochs: 2,
                stages: vec![10.0, 20.0],
                at: None,
            },
            15
        )
        .unwrap_err()
        .contains("needs 16 epochs"));
    }

    #[test]
    fn rho_grows_per_round_and_restarts_per_stage() {
        let s = schedule(16, vec![10.0, 20.0], 2);
        assert_eq!(s.rho_at(Phase::Admm { stage: 1, round: 3 }), Some(4e-3));
        assert_eq!(s.rho_at(Phase::Admm { stage: 2, round: 1 }), Some(1e-3));
        assert_eq!(s.rho_at(Phase::Retrain { stage: 1 }), None);
    }

    #[test]
    fn earlier_stages_keep_proportionally_more() {
        let s = schedule(16, vec![10.0, 20.0], 2);
        assert_eq!(s.keep_ratio("a", 2), Some(0.2));
        assert_eq!(s.keep_ratio("a", 1), Some(0.4));
        assert_eq!(s.keep_ratio("b", 1), Some(0.02));
        assert_eq!(s.keep_ratio("c", 1), None);
        assert_eq!(kept(0.009, 400_000), 3600);
        assert_eq!(kept(1e-9, 10), 1);
        assert_eq!(kept(1.0, 7), 7);
    }
}
