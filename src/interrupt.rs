//! Ctrl-C and SIGTERM during training: the first asks the loop to stop at the next step
//! boundary, where it writes a checkpoint and says how to resume; a second, for someone who
//! cannot wait, exits at once (every file a run writes is replaced atomically, so nothing
//! already written is lost either way).

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Exit code of a run stopped by a signal (128 + SIGINT, the shell's convention).
pub const EXIT_CODE: u8 = 130;

/// Route SIGINT and SIGTERM to [`requested`]. Only the binary calls this: a library user keeps
/// its own handling.
pub fn install() -> Result<(), String> {
    ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(EXIT_CODE));
        }
    })
    .map_err(|e| format!("cannot handle Ctrl-C: {e}"))
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
