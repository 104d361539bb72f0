//! Running external commands: echo the command line, inherit the terminal,
//! turn a non-zero exit into an error.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The `cargo` that runs this xtask (so toolchain overrides carry through).
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A command to run from the workspace root, with stdin closed (CI has none,
/// and nothing here should ever prompt).
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl Cmd {
    /// `cargo` with `args`.
    pub fn cargo<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::new(cargo()).args(args)
    }

    /// Any program.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The command line as shown to the user (program name shortened).
    fn display(&self) -> String {
        let program = Path::new(&self.program)
            .file_name()
            .map_or_else(|| self.program.to_string_lossy(), |n| n.to_string_lossy());
        let mut line = program.into_owned();
        for arg in &self.args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(workspace_root())
            .stdin(Stdio::null());
        command
    }

    /// Runs the command with the terminal inherited; fails on a non-zero exit.
    pub fn run(&self) -> Result<()> {
        println!("$ {}", self.display());
        let status = self
            .command()
            .status()
            .with_context(|| format!("could not start `{}`", self.display()))?;
        if !status.success() {
            bail!("`{}` failed ({status})", self.display());
        }
        Ok(())
    }

    /// Runs the command quietly and reports whether it succeeded (for probes
    /// such as `cargo nextest --version`).
    pub fn succeeds(&self) -> bool {
        self.command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs the command, echoing its stdout line by line as it comes and
    /// returning those lines and whether the command succeeded; stderr goes
    /// straight to the terminal.
    pub fn run_tee(&self) -> Result<(Vec<String>, bool)> {
        println!("$ {}", self.display());
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{}`", self.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading the command's output")?;
            println!("{line}");
            lines.push(line);
        }
        let status = child.wait().context("waiting for the command")?;
        if !status.success() {
            eprintln!("`{}` failed ({status})", self.display());
        }
        Ok((lines, status.success()))
    }
}
