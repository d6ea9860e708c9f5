//! `perfpilot replay DIR --labels windows.json`: the detector over every labelled file of a
//! corpus, scored as the Numenta Anomaly Benchmark scores (see [`crate::eval::nab`]).

use super::run::{detect_rows, ReplayError};
use crate::eval::nab::{
    count_labels, file_scores, parse_windows, score_corpus_with, CorpusScore, FileScore,
    LabelledFile, PROFILES,
};
use crate::stage::detector::DetectorConfig;
use std::fmt::Write as _;
use std::path::Path;

/// What a corpus replay scored.
#[derive(Debug, Clone)]
pub struct CorpusReport {
    /// Files scored.
    pub files: usize,
    /// Rows read over all files.
    pub rows: u64,
    /// Anomaly records the stage would emit over all files.
    pub anomalies: u64,
    /// Scores of the emitted anomalies as the stage emits them (1 where it emits one,
    /// else 0), per profile.
    pub emitted: [CorpusScore; 3],
    /// Scores of the emitted anomalies by the score each carries (0 where none is
    /// emitted), the threshold optimised above the stage's own.
    pub emitted_scored: [CorpusScore; 3],
    /// Scores of the `anomaly_score` column (graded), per profile.
    pub graded: [CorpusScore; 3],
    /// Raw labels counted from a `labels.json` beside the windows file: NAB's runner
    /// normalises a perfect score by them (None: by the windows).
    pub label_count: Option<usize>,
    /// Labelled window boundaries that are not a timestamp of their file (NAB never
    /// scores such a window).
    pub unmatched_windows: Vec<String>,
    /// Per file (path as in the windows file), its part of the standard score of the
    /// emitted anomalies by their score, at that row's threshold.
    pub per_file: Vec<(String, FileScore)>,
}

/// Errors of a corpus replay.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// The labels file could not be read or parsed.
    #[error("{0}")]
    Labels(String),
    /// A labelled file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be replayed.
    #[error("{path}: {source}")]
    Replay {
        /// The file.
        path: String,
        /// Why.
        source: ReplayError,
    },
}

/// Replays every file named in `labels` (paths relative to `dir`), each on a fresh
/// detector, and scores both the emitted anomalies and the graded score column.
pub fn replay_corpus(
    dir: &Path,
    labels: &Path,
    cfg: &DetectorConfig,
) -> Result<CorpusReport, CorpusError> {
    let json = std::fs::read_to_string(labels)
        .map_err(|e| CorpusError::Labels(format!("cannot read {}: {e}", labels.display())))?;
    let windows = parse_windows(&json, super::parse_timestamp).map_err(CorpusError::Labels)?;
    let label_count = labels
        .parent()
        .map(|d| d.join("labels.json"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|text| count_labels(&text))
        .transpose()
        .map_err(CorpusError::Labels)?;
    let mut emitted = Vec::with_capacity(windows.len());
    let mut emitted_scored_files = Vec::with_capacity(windows.len());
    let mut graded = Vec::with_capacity(windows.len());
    let (mut rows, mut anomalies) = (0, 0);
    let mut unmatched_windows = Vec::new();
    let mut paths = Vec::with_capacity(windows.len());
    for (path, file_windows) in windows {
        let full = dir.join(&path);
        let file = std::fs::File::open(&full).map_err(|source| CorpusError::Open {
            path: full.display().to_string(),
            source,
        })?;
        let mut g = LabelledFile {
            windows: file_windows,
            ..LabelledFile::default()
        };
        let mut flags = Vec::new();
        let mut carried = Vec::new();
        let summary = detect_rows(
            std::io::BufReader::new(file),
            cfg,
            &mut |_| {},
            |row, _, _, scored| {
                g.timestamps.push(row.ts_ms);
                g.scores.push(scored.point.map_or(0.0, |p| p.score));
                flags.push(if scored.anomaly.is_some() { 1.0 } else { 0.0 });
                carried.push(scored.anomaly.as_ref().map_or(0.0, |a| a.score));
                Ok(())
            },
        )
        .map_err(|source| CorpusError::Replay {
            path: path.clone(),
            source,
        })?;
        rows += summary.rows;
        anomalies += summary.anomalies.values().sum::<u64>();
        for (start, end) in &g.windows {
            for edge in [start, end] {
                if g.timestamps.binary_search(edge).is_err() {
                    unmatched_windows.push(format!("{path}: {edge}"));
                }
            }
        }
        emitted.push(LabelledFile {
            timestamps: g.timestamps.clone(),
            scores: flags,
            windows: g.windows.clone(),
        });
        emitted_scored_files.push(LabelledFile {
            timestamps: g.timestamps.clone(),
            scores: carried,
            windows: g.windows.clone(),
        });
        graded.push(g);
        paths.push(path);
    }
    let emitted_scored = PROFILES.map(|p| score_corpus_with(&emitted_scored_files, p, label_count));
    let per_file = paths
        .into_iter()
        .zip(file_scores(
            &emitted_scored_files,
            PROFILES[0],
            emitted_scored[0].threshold,
        ))
        .collect();
    Ok(CorpusReport {
        files: graded.len(),
        rows,
        anomalies,
        emitted: PROFILES.map(|p| score_corpus_with(&emitted, p, label_count)),
        emitted_scored,
        graded: PROFILES.map(|p| score_corpus_with(&graded, p, label_count)),
        label_count,
        unmatched_windows,
        per_file,
    })
}

impl CorpusReport {
    /// The table printed by `replay --labels`.
    pub fn table(&self) -> String {
        let norm = match self.label_count {
            Some(n) => format!("normalised by the {n} labels of labels.json, as NAB's runner does"),
            None => "normalised by the number of windows (no labels.json beside the windows file)"
                .to_string(),
        };
        let mut s = format!(
            "NAB scores over {} files ({} rows, {} anomalies emitted); {norm}\n\n",
            self.files, self.rows, self.anomalies
        );
        let _ = writeln!(
            s,
            "{:<26} {:>9} {:>9} {:>9}   windows found, false positives (standard; best threshold)",
            "what is scored", "standard", "low FP", "low FN",
        );
        for (name, scores) in [
            ("emitted anomalies", &self.emitted),
            ("emitted, by their score", &self.emitted_scored),
            ("anomaly_score column", &self.graded),
        ] {
            let _ = writeln!(
                s,
                "{:<26} {:>9.2} {:>9.2} {:>9.2}   {}/{}, {} (threshold {:.4})",
                name,
                scores[0].normalized,
                scores[1].normalized,
                scores[2].normalized,
                scores[0].detected,
                scores[0].windows,
                scores[0].false_positives,
                scores[0].threshold
            );
        }
        if !self.unmatched_windows.is_empty() {
            let _ = writeln!(
                s,
                "\n{} window edges are not timestamps of their file (NAB skips such windows): {}",
                self.unmatched_windows.len(),
                self.unmatched_windows.join(", ")
            );
        }
        s
    }

    /// The per-file table printed by `replay --labels --per-file`: where the standard
    /// score of the emitted anomalies (by their score) is lost.
    pub fn per_file_table(&self) -> String {
        let s0 = &self.emitted_scored[0];
        // The corpus' perfect − null, in raw points: what 100 normalised points are.
        let span = if s0.normalized > 0.0 {
            (s0.raw - (-s0.profile.fn_ * s0.windows as f64)) * 100.0 / s0.normalized
        } else {
            f64::NAN
        };
        let mut s = format!(
            "\nper file (standard, emitted by their score, threshold {:.4}): points lost of 100\n\n",
            s0.threshold
        );
        let _ = writeln!(s, "{:>6}  {:>7}  {:>4}  file", "lost", "windows", "FPs");
        let mut rows: Vec<_> = self.per_file.iter().collect();
        rows.sort_by(|a, b| (b.1.perfect - b.1.raw).total_cmp(&(a.1.perfect - a.1.raw)));
        for (path, f) in rows {
            let _ = writeln!(
                s,
                "{:>6.2}  {:>3}/{:<3}  {:>4}  {}",
                100.0 * (f.perfect - f.raw) / span,
                f.detected,
                f.windows,
                f.false_positives,
                path
            );
        }
        s
    }
}
