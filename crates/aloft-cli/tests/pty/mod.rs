//! A pseudo-terminal for tests: the child writes to a real pty of a chosen
//! size (so `isatty` and the terminal size are what a person's terminal
//! would report), and a thread reads everything it draws.

use std::fs::File;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustix::fs::{Mode, OFlags};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{Winsize, tcsetwinsize};

/// The terminal side of an open pty and what has been read from it so far.
pub struct Pty {
    slave: Option<OwnedFd>,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Pty {
    /// Opens a pty of `cols` x `rows` and starts reading its output.
    pub fn open(cols: u16, rows: u16) -> Self {
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = rustix::fs::open(
            name.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open the pty's terminal side");
        tcsetwinsize(
            &slave,
            Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .expect("set the pty's size");
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&output);
        let reader = std::thread::spawn(move || {
            let mut master = File::from(master);
            let mut buf = [0u8; 4096];
            // Linux answers EIO once every terminal-side descriptor is closed.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            slave: Some(slave),
            output,
            reader: Some(reader),
        }
    }

    /// A descriptor of the terminal side, to hand to a child as stdout or stderr.
    pub fn terminal(&self) -> std::process::Stdio {
        self.slave
            .as_ref()
            .expect("the terminal side is still open")
            .try_clone()
            .expect("dup the pty")
            .into()
    }

    /// Everything read so far.
    pub fn output(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// Closes this side's copy of the terminal and, once every child that
    /// holds it has exited, returns all the output.
    pub fn finish(mut self) -> Vec<u8> {
        self.slave.take();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.output()
    }
}
