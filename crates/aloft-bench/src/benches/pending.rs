//! Benchmarks whose parts are still being built: listed as "not measured yet".

use crate::benches::{Bench, Ctx};
use crate::report::{BenchResult, Status};

/// A placeholder for a benchmark that cannot run yet.
#[derive(Debug)]
pub struct Pending {
    /// Registry name.
    pub name: &'static str,
    /// Heading.
    pub title: &'static str,
    /// Issue item.
    pub item: u8,
    /// What it waits for.
    pub needs: &'static str,
}

impl Bench for Pending {
    fn name(&self) -> &'static str {
        self.name
    }

    fn title(&self) -> &'static str {
        self.title
    }

    fn item(&self) -> u8 {
        self.item
    }

    fn run(&self, _ctx: &Ctx) -> anyhow::Result<BenchResult> {
        let mut r = BenchResult::new(self.name, self.title, self.item, Status::NotMeasuredYet);
        r.note(format!("Not measured yet: needs {}.", self.needs));
        Ok(r)
    }
}
