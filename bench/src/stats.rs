//! Medians, spreads, goals and the Markdown report.
//!
//! Every metric is a list of samples (one per repetition, or per window of a long run); the
//! report shows the median, the min–max and the interquartile range, and compares the
//! median with the goal: met, or missed by how much (in the metric's unit and relative to the
//! goal).

use std::fmt::Write as _;

/// Median and spread of a list of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// First quartile.
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
}

/// The `q` quantile (0..=1) of sorted samples, linearly interpolated.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

impl Summary {
    /// Summarizes the finite samples; None when there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Summary {
            n: v.len(),
            median: quantile(&v, 0.5),
            min: v[0],
            max: v[v.len() - 1],
            q1: quantile(&v, 0.25),
            q3: quantile(&v, 0.75),
        })
    }
}

/// Which side of the bound is good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// The value must be at most the bound (costs).
    AtMost,
    /// The value must be at least the bound (throughputs).
    AtLeast,
}

/// A goal of the issue, applied to the median.
#[derive(Clone, Debug, PartialEq)]
pub struct Goal {
    /// Direction.
    pub cmp: Cmp,
    /// The bound, in the metric's unit.
    pub bound: f64,
}

impl Goal {
    /// `≤ bound`.
    pub fn at_most(bound: f64) -> Goal {
        Goal {
            cmp: Cmp::AtMost,
            bound,
        }
    }

    /// `≥ bound`.
    pub fn at_least(bound: f64) -> Goal {
        Goal {
            cmp: Cmp::AtLeast,
            bound,
        }
    }

    /// How far `value` is on the wrong side of the bound (0 when met).
    pub fn shortfall(&self, value: f64) -> f64 {
        match self.cmp {
            Cmp::AtMost => (value - self.bound).max(0.0),
            Cmp::AtLeast => (self.bound - value).max(0.0),
        }
    }

    fn text(&self, unit: &str) -> String {
        let op = match self.cmp {
            Cmp::AtMost => "≤",
            Cmp::AtLeast => "≥",
        };
        format!("{op} {}{}", num(self.bound), unit_suffix(unit))
    }
}

/// One line of the results table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Benchmark number of the issue (1..=8).
    pub id: u8,
    /// What is measured.
    pub metric: String,
    /// Configuration (agent options, number of agents, …).
    pub config: String,
    /// Unit of the samples (`%`, `ns`, `k events/s`, …).
    pub unit: String,
    /// The samples' summary.
    pub summary: Option<Summary>,
    /// The goal, if the issue sets one for this line.
    pub goal: Option<Goal>,
    /// A short remark shown in the table.
    pub note: String,
}

impl Row {
    /// A row from its samples.
    pub fn new(id: u8, metric: &str, config: &str, unit: &str, samples: &[f64]) -> Row {
        Row {
            id,
            metric: metric.into(),
            config: config.into(),
            unit: unit.into(),
            summary: Summary::of(samples),
            goal: None,
            note: String::new(),
        }
    }

    /// Sets the goal.
    pub fn goal(mut self, goal: Goal) -> Row {
        self.goal = Some(goal);
        self
    }

    /// Sets the remark.
    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    /// `met`, `**missed** by …`, or empty without a goal.
    pub fn verdict(&self) -> String {
        let Some(goal) = &self.goal else {
            return String::new();
        };
        let Some(s) = &self.summary else {
            return "no data".into();
        };
        let short = goal.shortfall(s.median);
        if short == 0.0 {
            return "met".into();
        }
        if self.unit == "%" {
            return format!("**missed** by {} pp", num(short));
        }
        let rel = if goal.bound != 0.0 {
            format!(" ({:+.0} %)", short / goal.bound.abs() * 100.0)
        } else {
            String::new()
        };
        format!(
            "**missed** by {}{}{rel}",
            num(short),
            unit_suffix(&self.unit)
        )
    }

    /// True when the row has a goal and its median misses it.
    pub fn missed(&self) -> bool {
        match (&self.goal, &self.summary) {
            (Some(g), Some(s)) => g.shortfall(s.median) > 0.0,
            _ => false,
        }
    }
}

/// A number with as many digits as it deserves: `1234`, `123`, `12.3`, `1.23`, `0.012`.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "–".into()
    } else if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn unit_suffix(unit: &str) -> String {
    match unit {
        "" => String::new(),
        "%" => " %".into(),
        u => format!(" {u}"),
    }
}

/// The results of a run: table rows, free-form sections (per-step tables, per-program
/// tables) and notes.
#[derive(Debug, Default)]
pub struct Report {
    /// Table rows, in the order measured.
    pub rows: Vec<Row>,
    /// Extra Markdown sections: (title, body).
    pub sections: Vec<(String, String)>,
    /// Remarks printed under the table.
    pub notes: Vec<String>,
}

impl Report {
    /// Adds a row and prints it at once on stderr (long runs show progress).
    pub fn push(&mut self, row: Row) {
        eprintln!(
            "  [{}] {} / {}: {} {}",
            row.id,
            row.metric,
            row.config,
            row.summary.map_or("no data".into(), |s| num(s.median)),
            row.unit
        );
        self.rows.push(row);
    }

    /// Adds a Markdown section.
    pub fn section(&mut self, title: impl Into<String>, body: impl Into<String>) {
        self.sections.push((title.into(), body.into()));
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The results table in Markdown.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| # | metric | config | median | min … max | IQR | n | goal | result | note |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let (median, range, iqr, n) = match &r.summary {
                Some(s) => (
                    format!("{}{}", num(s.median), unit_suffix(&r.unit)),
                    format!("{} … {}", num(s.min), num(s.max)),
                    format!("{} … {}", num(s.q1), num(s.q3)),
                    s.n.to_string(),
                ),
                None => ("–".into(), "–".into(), "–".into(), "0".into()),
            };
            let goal = r.goal.as_ref().map_or(String::new(), |g| g.text(&r.unit));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {median} | {range} | {iqr} | {n} | {goal} | {} | {} |",
                r.id,
                r.metric,
                r.config,
                r.verdict(),
                r.note
            );
        }
        out
    }

    /// The whole report: header lines, the table, sections and notes.
    pub fn markdown(&self, header: &[String]) -> String {
        let mut out = String::new();
        for h in header {
            let _ = writeln!(out, "{h}");
        }
        out.push('\n');
        out.push_str(&self.table());
        for (title, body) in &self.sections {
            let _ = write!(out, "\n#### {title}\n\n{body}");
            if !body.ends_with('\n') {
                out.push('\n');
            }
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_samples() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0, f64::NAN]).unwrap();
        assert_eq!(s.n, 5);
        assert_eq!(s.median, 3.0);
        assert_eq!((s.min, s.max), (1.0, 5.0));
        assert_eq!((s.q1, s.q3), (2.0, 4.0));
        assert_eq!(Summary::of(&[2.0, 4.0]).unwrap().median, 3.0);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn verdicts_say_by_how_much() {
        let r = Row::new(2, "run time", "none", "ns", &[160.0, 170.0, 165.0])
            .goal(Goal::at_most(150.0));
        assert!(r.missed());
        assert_eq!(r.verdict(), "**missed** by 15.0 ns (+10 %)");
        let r = Row::new(1, "TCP overhead", "medium", "%", &[4.0]).goal(Goal::at_most(3.0));
        assert_eq!(r.verdict(), "**missed** by 1.00 pp");
        let r = Row::new(3, "rate", "none", "k events/s", &[250.0]).goal(Goal::at_least(200.0));
        assert_eq!(r.verdict(), "met");
        assert!(!r.missed());
    }

    #[test]
    fn table_has_one_line_per_row() {
        let mut rep = Report::default();
        rep.push(Row::new(7, "idle CPU", "medium", "%", &[0.1, 0.2]).goal(Goal::at_most(1.0)));
        let t = rep.table();
        assert_eq!(t.lines().count(), 3);
        assert!(
            t.contains("| 7 | idle CPU | medium | 0.15 % | 0.10 … 0.20 |"),
            "{t}"
        );
    }
}
