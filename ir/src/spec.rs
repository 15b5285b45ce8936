//! The training specification a module carries beside its graph: data, schedule, optimizer and
//! sparse-training method. It lives in the IR (not the frontend) so that a `.ir` file is a complete
//! program: `sparsec train model.ir` needs nothing else.

/// Where the examples come from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    /// Fashion-MNIST IDX files; `dir: None` means "use the search order".
    FashionMnist { dir: Option<String> },
    /// Any directory holding the four MNIST-layout IDX files.
    Idx { dir: String },
    /// A seeded synthetic set shaped like the model's input and classes.
    Synthetic {
        train_samples: u64,
        test_samples: u64,
        seed: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrainSpec {
    pub epochs: u64,
    pub batch: u64,
    pub seed: u64,
    pub log_every: u64,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
}

/// Plain SGD with optional momentum, weight decay and Nesterov momentum (PyTorch semantics).
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

/// Learning-rate schedule, stepped once per epoch (PyTorch `StepLR` / `MultiStepLR` semantics).
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    Step { every: u64, gamma: f64 },
    MultiStep { milestones: Vec<u64>, gamma: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropbackScope {
    /// One budget of `k` shared by every selected parameter (the paper's setting).
    Global,
    /// `k` split over the selected parameters in proportion to their sizes.
    PerLayer,
}

/// How ADMM's per-layer keep ratio is given.
#[derive(Clone, Debug, PartialEq)]
pub enum KeepRatio {
    All(f64),
    /// Layer name → ratio, in the order written.
    PerLayer(Vec<(String, f64)>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Dropback {
        k: u64,
        scope: DropbackScope,
        freeze_after: Option<u64>,
        decay_init: Option<f64>,
    },
    Admm {
        keep: KeepRatio,
        rho: f64,
        rho_growth: f64,
        rounds: u64,
        epochs_per_round: u64,
        retrain_epochs: u64,
        stages: Vec<f64>,
        /// The phase the program is built for (penalty with its ρ, masks); `None`: the phase of
        /// the run's first epoch. The run side moves it on ([`crate::admm`]).
        at: Option<crate::admm::Phase>,
    },
    PruneTrain {
        ratio: f64,
        interval: u64,
        threshold: f64,
        /// The group-lasso weight λ once it is fixed (at the first minibatch of a run, so that
        /// the penalty's share of the loss is `ratio`); `None` before.
        lambda: Option<f64>,
    },
    ActivationDensity {
        resize_at: Vec<u64>,
        min_width: u64,
    },
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Dropback { .. } => "dropback",
            Method::Admm { .. } => "admm",
            Method::PruneTrain { .. } => "prunetrain",
            Method::ActivationDensity { .. } => "activation_density",
        }
    }
}

/// A method together with the layers it applies to (selectors already resolved to layer names,
/// in declaration order).
#[derive(Clone, Debug, PartialEq)]
pub struct MethodSpec {
    pub method: Method,
    pub layers: Vec<String>,
}

/// The ranges of the optimizer's settings: one definition for the model language's checker,
/// `--set` and the verifier, so that an IR dump is held to what a model file is.
pub mod ranges {
    /// A float setting's valid values and how messages state them.
    pub struct FloatRange {
        pub name: &'static str,
        /// The rule, as in "`lr` must be > 0".
        pub rule: &'static str,
        pub ok: fn(f64) -> bool,
    }

    impl FloatRange {
        /// "`lr` must be > 0".
        pub fn message(&self) -> String {
            format!("`{}` must be {}", self.name, self.rule)
        }
    }

    pub const LR: FloatRange = FloatRange {
        name: "lr",
        rule: "> 0",
        ok: |x| x > 0.0,
    };
    pub const MOMENTUM: FloatRange = FloatRange {
        name: "momentum",
        rule: "in 0 ≤ momentum < 1",
        ok: |x| (0.0..1.0).contains(&x),
    };
    pub const WEIGHT_DECAY: FloatRange = FloatRange {
        name: "weight_decay",
        rule: "≥ 0",
        ok: |x| x >= 0.0,
    };
}
