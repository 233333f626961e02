//! The terminal, borrowed and always given back.
//!
//! [`enter`] switches the terminal to raw mode and the alternate screen and
//! hides the cursor; the returned [`TerminalGuard`] undoes all three when it
//! drops. A panic hook (installed once) also undoes them before the panic
//! message prints, on whichever thread panics — a panicking mesh task must
//! not leave the user's shell in raw mode. After such a restore
//! [`is_active`] turns false and the dashboard stops drawing, so it does not
//! scribble over the panic message.

use std::io::{self, Stdout, stdout};
use std::ops::{Deref, DerefMut};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

/// Whether this process currently holds the terminal.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();

/// The terminal in dashboard mode; restores it on drop.
pub struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl std::fmt::Debug for TerminalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalGuard").finish_non_exhaustive()
    }
}

/// Takes the terminal: raw mode, alternate screen, hidden cursor.
pub fn enter() -> io::Result<TerminalGuard> {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
    ACTIVE.store(true, Ordering::SeqCst);
    // From here on a failure must still give the terminal back.
    let taken = enable_raw_mode()
        .and_then(|()| execute!(stdout(), EnterAlternateScreen, Hide))
        .and_then(|()| Terminal::new(CrosstermBackend::new(stdout())));
    match taken {
        Ok(terminal) => Ok(TerminalGuard { terminal }),
        Err(e) => {
            restore();
            Err(e)
        }
    }
}

/// Gives the terminal back (cooked mode, main screen, cursor shown) if this
/// process holds it. Safe to call at any time, from any thread, repeatedly.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(stdout(), LeaveAlternateScreen, Show);
    }
}

/// Whether the dashboard still holds the terminal (false after a panic
/// anywhere in the process gave it back).
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

impl Deref for TerminalGuard {
    type Target = Terminal<CrosstermBackend<Stdout>>;

    fn deref(&self) -> &Self::Target {
        &self.terminal
    }
}

impl DerefMut for TerminalGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.terminal
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}
