//! `--set KEY=VALUE`: overriding the training settings of a model file from the command line.
//! A bad key or value is a usage error (exit 2), checked with the same ranges as the model file.

use sparsec_ir::spec::ranges::{FloatRange, LR, MOMENTUM, WEIGHT_DECAY};
use sparsec_ir::spec::TrainSpec;

/// Settings that only the command line sets: they change how a run proceeds, not the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Stop after this many optimizer steps in total (0: write the initial checkpoint only).
    pub max_steps: Option<u64>,
    /// Visit the training set in a seeded random order each epoch (false: file order).
    pub shuffle: bool,
    /// Bytes the train step's materialised values may take (extraction picks the fastest
    /// program that fits).
    pub memory_budget: Option<u64>,
    /// Checkpoints between the epoch ends as well: every so many steps or so much time.
    pub checkpoint_every: Option<CheckpointEvery>,
}

/// `--set checkpoint_every=N` (steps), `=Nm` (minutes) or `=Ns` (seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointEvery {
    Steps(u64),
    Seconds(u64),
}

impl CheckpointEvery {
    fn parse(value: &str) -> Option<CheckpointEvery> {
        let number = |digits: &str| {
            digits
                .replace('_', "")
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
        };
        if let Some(minutes) = value.strip_suffix('m') {
            number(minutes)?
                .checked_mul(60)
                .map(CheckpointEvery::Seconds)
        } else if let Some(seconds) = value.strip_suffix('s') {
            number(seconds).map(CheckpointEvery::Seconds)
        } else {
            number(value).map(CheckpointEvery::Steps)
        }
    }
}

/// Settings that concern one session of a run, not the run: they are not recorded with it, so
/// a resumed run may be given them afresh, and they do not count in its fingerprint.
pub const SESSION_ONLY: &[&str] = &["max_steps", "checkpoint_every"];

/// Whether `key` is [`SESSION_ONLY`].
pub fn is_session_only(key: &str) -> bool {
    SESSION_ONLY.contains(&key)
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_steps: None,
            shuffle: true,
            memory_budget: None,
            checkpoint_every: None,
        }
    }
}

/// The keys `--set` accepts, for messages and suggestions.
pub const KEYS: &[&str] = &[
    "epochs",
    "batch",
    "seed",
    "log_every",
    "lr",
    "momentum",
    "weight_decay",
    "nesterov",
    "max_steps",
    "shuffle",
    "memory_budget",
    "checkpoint_every",
];

/// Split `KEY=VALUE` strings, rejecting malformed ones and unknown keys.
pub fn parse(sets: &[String]) -> Result<Vec<(String, String)>, String> {
    sets.iter()
        .map(|s| {
            let (key, value) = s
                .split_once('=')
                .ok_or_else(|| format!("`--set {s}`: expected KEY=VALUE"))?;
            let key = key.trim();
            if !KEYS.contains(&key) {
                let hint = KEYS
                    .iter()
                    .map(|k| (strsim::jaro_winkler(k, key), k))
                    .filter(|(score, _)| *score > 0.8)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, k)| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "`--set {s}`: unknown setting `{key}`{hint}; settings: {}",
                    KEYS.join(", ")
                ));
            }
            Ok((key.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Apply parsed overrides to a training spec; returns the run options they set.
pub fn apply(train: &mut TrainSpec, pairs: &[(String, String)]) -> Result<RunOptions, String> {
    let mut run = RunOptions::default();
    for (key, value) in pairs {
        let bad = |rule: &str| format!("`--set {key}={value}`: {key} must be {rule}");
        let uint = |min: u64| -> Result<u64, String> {
            value
                .replace('_', "")
                .parse::<u64>()
                .ok()
                .filter(|&v| v >= min)
                .ok_or_else(|| bad(&format!("an integer ≥ {min}")))
        };
        let float = || -> Result<f64, String> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad("a finite number"))
        };
        let ranged = |range: &FloatRange| -> Result<f64, String> {
            Some(float()?)
                .filter(|&x| (range.ok)(x))
                .ok_or_else(|| bad(range.rule))
        };
        let boolean = || -> Result<bool, String> {
            match value.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(bad("`true` or `false`")),
            }
        };
        match key.as_str() {
            "epochs" => train.epochs = uint(1)?,
            "batch" => train.batch = uint(1)?,
            "seed" => train.seed = uint(0)?,
            "log_every" => train.log_every = uint(1)?,
            "lr" => train.optimizer.lr = ranged(&LR)?,
            "momentum" => train.optimizer.momentum = ranged(&MOMENTUM)?,
            "weight_decay" => train.optimizer.weight_decay = ranged(&WEIGHT_DECAY)?,
            "nesterov" => train.optimizer.nesterov = boolean()?,
            "max_steps" => run.max_steps = Some(uint(0)?),
            "shuffle" => run.shuffle = boolean()?,
            "memory_budget" => run.memory_budget = Some(uint(1)?),
            "checkpoint_every" => {
                run.checkpoint_every = Some(CheckpointEvery::parse(value).ok_or_else(|| {
                    bad("a number of steps ≥ 1, or of minutes (`10m`) or seconds (`90s`)")
                })?)
            }
            // `parse` checks the command line's keys; a checkpoint's recorded overrides come
            // here unchecked (another build's, or edited), so an unknown one is an error too.
            other => {
                return Err(format!(
                    "unknown setting `{other}` (settings: {})",
                    KEYS.join(", ")
                ))
            }
        }
    }
    if train.optimizer.nesterov && train.optimizer.momentum == 0.0 {
        return Err("nesterov momentum needs momentum > 0".into());
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsec_ir::spec::{Optimizer, Schedule};

    fn spec() -> TrainSpec {
        TrainSpec {
            epochs: 10,
            batch: 64,
            seed: 0,
            log_every: 100,
            optimizer: Optimizer {
                lr: 0.1,
                momentum: 0.0,
                weight_decay: 0.0,
                nesterov: false,
            },
            schedule: Schedule::Constant,
        }
    }

    fn sets(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overrides_apply_and_validate() {
        let mut t = spec();
        let pairs = parse(&sets(&[
            "epochs=3",
            "lr=0.5",
            "max_steps=0",
            "shuffle=false",
        ]))
        .unwrap();
        let run = apply(&mut t, &pairs).unwrap();
        assert_eq!((t.epochs, t.optimizer.lr), (3, 0.5));
        assert_eq!(
            run,
            RunOptions {
                max_steps: Some(0),
                shuffle: false,
                memory_budget: None,
                checkpoint_every: None,
            }
        );
        for (value, every) in [
            ("500", CheckpointEvery::Steps(500)),
            ("10m", CheckpointEvery::Seconds(600)),
            ("90s", CheckpointEvery::Seconds(90)),
        ] {
            let pairs = parse(&sets(&[&format!("checkpoint_every={value}")])).unwrap();
            assert_eq!(apply(&mut t, &pairs).unwrap().checkpoint_every, Some(every));
        }
        for bad in [
            "epochs=0",
            "lr=-1",
            "momentum=1",
            "shuffle=maybe",
            "batch=x",
            "lr=nan",
            "checkpoint_every=0",
            "checkpoint_every=5h",
            "checkpoint_every=m",
        ] {
            let pairs = parse(&sets(&[bad])).unwrap();
            assert!(apply(&mut spec(), &pairs).is_err(), "{bad}");
        }
        // A checkpoint's recorded overrides reach `apply` without `parse`: an unknown key (from
        // another build, or an edited file) is an error, not a crash.
        let unknown = [("warmup_epochs".to_owned(), "5".to_owned())];
        let err = apply(&mut spec(), &unknown).unwrap_err();
        assert!(err.contains("unknown setting `warmup_epochs`"), "{err}");
        let err = parse(&sets(&["epoch=3"])).unwrap_err();
        assert!(err.contains("did you mean `epochs`"), "{err}");
        assert!(parse(&sets(&["epochs"])).is_err());
        let pairs = parse(&sets(&["nesterov=true"])).unwrap();
        assert!(apply(&mut spec(), &pairs).is_err());
    }
}
