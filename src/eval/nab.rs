//! The Numenta Anomaly Benchmark's scoring, as NAB's own scorer defines it (its
//! `sweeper.py`): a probationary start per file that is never scored, one true positive
//! per labelled window weighted by a scaled sigmoid of its position, false positives
//! weighted by their distance after the preceding window, one threshold optimised per
//! profile over the whole corpus, and a score normalised so that never alarming is 0 and
//! a perfect detector 100. Pure: the caller reads the files.

/// Weights of one NAB application profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// NAB's name for it.
    pub name: &'static str,
    /// Weight of a detected window.
    pub tp: f64,
    /// Weight of a false positive.
    pub fp: f64,
    /// Weight of a missed window.
    pub fn_: f64,
}

/// NAB's three profiles: standard, reward_low_FP_rate, reward_low_FN_rate.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FP_rate",
        tp: 1.0,
        fp: 0.22,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FN_rate",
        tp: 1.0,
        fp: 0.11,
        fn_: 2.0,
    },
];

/// Share of each file (at most 750 points) that is never scored.
pub const PROBATION_PERCENT: f64 = 0.15;

/// One file of a detector's results with its labelled windows.
#[derive(Debug, Clone, Default)]
pub struct LabelledFile {
    /// The file's timestamps, in order.
    pub timestamps: Vec<i64>,
    /// The detector's score per point (a detection where score ≥ threshold).
    pub scores: Vec<f64>,
    /// Labelled windows `[start, end]`, both timestamps of the file, in time order.
    pub windows: Vec<(i64, i64)>,
}

/// A profile's score over a corpus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorpusScore {
    /// The profile.
    pub profile: Profile,
    /// The threshold that maximised the raw score.
    pub threshold: f64,
    /// The raw (weighted) score at that threshold.
    pub raw: f64,
    /// 100 × (raw − null) / (perfect − null).
    pub normalized: f64,
    /// Windows scored, and those with a detection at the threshold.
    pub windows: usize,
    /// Windows with a detection at the threshold.
    pub detected: usize,
    /// Detections outside every window at the threshold.
    pub false_positives: usize,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// NAB's scaled sigmoid: about 0.987 at a window's left edge (−1), 0 at its right edge,
/// −1 from three window widths after it.
pub fn scaled_sigmoid(relative_position: f64) -> f64 {
    if relative_position >= 3.0 {
        -1.0
    } else {
        2.0 * sigmoid(-5.0 * relative_position) - 1.0
    }
}

/// How many leading points of a file of `rows` are probationary.
pub fn probationary_length(rows: usize) -> usize {
    let share = (PROBATION_PERCENT * rows as f64).floor();
    share.min(PROBATION_PERCENT * 5000.0) as usize
}

/// A scorable point: its score, its weighted contribution as a detection, and its
/// window (a corpus-wide id) when it lies in one.
#[derive(Debug, Clone, Copy)]
struct SweepPoint {
    score: f64,
    weight: f64,
    window: Option<usize>,
}

/// The scorable points of one file (NAB's `calcSweepScore`), window ids from `first_id`.
/// Returns the points and how many window ids were used.
fn sweep(file: &LabelledFile, profile: &Profile, first_id: usize) -> (Vec<SweepPoint>, usize) {
    let max_tp = scaled_sigmoid(-1.0);
    let probation = probationary_length(file.timestamps.len());
    let index_of = |ts: i64| file.timestamps.iter().position(|t| *t == ts);
    let mut pending = file.windows.iter().copied().peekable();
    let mut out = Vec::with_capacity(file.timestamps.len().saturating_sub(probation));
    let mut ids = 0;
    // (id, right index, width) of the open window, and (right index, width) of the last one.
    let mut current: Option<(usize, usize, f64, i64)> = None;
    let mut previous: Option<(usize, f64)> = None;
    for (i, (&ts, &score)) in file.timestamps.iter().zip(&file.scores).enumerate() {
        if let Some(&(start, end)) = pending.peek() {
            if ts == start {
                pending.next();
                if let Some(right) = index_of(end) {
                    let width = (right as f64) - (i as f64) + 1.0;
                    current = Some((first_id + ids, right, width, end));
                    ids += 1;
                }
            }
        }
        let (weight, window) = match current {
            Some((id, right, width, _)) => {
                let position = -((right as f64) - (i as f64) + 1.0) / width;
                (scaled_sigmoid(position) * profile.tp / max_tp, Some(id))
            }
            None => {
                let position = match previous {
                    None => 3.0,
                    Some((right, width)) => (i as f64 - right as f64).abs() / (width - 1.0),
                };
                (scaled_sigmoid(position) * profile.fp, None)
            }
        };
        if i >= probation {
            out.push(SweepPoint {
                score,
                weight,
                window,
            });
        }
        if let Some((_, _, width, end)) = current {
            if ts == end {
                previous = Some((i, width));
                current = None;
            }
        }
    }
    (out, ids)
}

/// Scores a corpus under one profile, with the threshold optimised over all its files
/// (NAB's `calcScoreByThreshold` on the concatenated sweep). A perfect detector scores
/// one TP weight per window; NAB's own runner counts one per raw label instead
/// (`labels.json`), which [`score_corpus_with`] takes.
pub fn score_corpus(files: &[LabelledFile], profile: Profile) -> CorpusScore {
    score_corpus_with(files, profile, None)
}

/// [`score_corpus`] with the perfect score's count of true positives given (NAB's
/// runner: the number of raw labels), or counted from the windows when `None`.
pub fn score_corpus_with(
    files: &[LabelledFile],
    profile: Profile,
    perfect_count: Option<usize>,
) -> CorpusScore {
    let mut points = Vec::new();
    let mut next_id = 0;
    for f in files {
        let (p, ids) = sweep(f, &profile, next_id);
        next_id += ids;
        points.extend(p);
    }
    // Windows that have at least one scorable point (a window wholly inside the
    // probationary period is not scored).
    let mut best = vec![f64::NEG_INFINITY; next_id];
    let mut scored = vec![false; next_id];
    for p in &points {
        if let Some(w) = p.window {
            scored[w] = true;
        }
    }
    let windows = scored.iter().filter(|s| **s).count();
    let null = -profile.fn_ * windows as f64;
    let perfect = profile.tp * perfect_count.unwrap_or(windows) as f64;
    points.sort_by(|a, b| b.score.total_cmp(&a.score));

    // Start above every score: every window missed, nothing flagged.
    let mut window_part = null;
    let mut fp_part = 0.0;
    let (mut detected, mut fps) = (0usize, 0usize);
    let mut chosen = (1.1, null, 0usize, 0usize);
    let mut i = 0;
    while i < points.len() {
        let threshold = points[i].score;
        while i < points.len() && points[i].score == threshold {
            let p = points[i];
            match p.window {
                None => {
                    fp_part += p.weight;
                    fps += 1;
                }
                Some(w) => {
                    let old = if best[w].is_finite() {
                        best[w]
                    } else {
                        -profile.fn_
                    };
                    if !best[w].is_finite() {
                        detected += 1;
                    }
                    let new = old.max(p.weight);
                    best[w] = new;
                    window_part += new - old;
                }
            }
            i += 1;
        }
        let total = window_part + fp_part;
        if total > chosen.1 {
            chosen = (threshold, total, detected, fps);
        }
    }
    let (threshold, raw, detected, false_positives) = chosen;
    let normalized = if perfect > null {
        100.0 * (raw - null) / (perfect - null)
    } else {
        0.0
    };
    CorpusScore {
        profile,
        threshold,
        raw,
        normalized,
        windows,
        detected,
        false_positives,
    }
}

/// One file's share of a corpus score at a given threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FileScore {
    /// Windows of the file that are scored (not wholly probationary).
    pub windows: usize,
    /// Those with a detection at the threshold.
    pub detected: usize,
    /// Detections outside every window.
    pub false_positives: usize,
    /// The file's raw score: best weight per window (or −FN weight) plus the false
    /// positives' weights.
    pub raw: f64,
    /// What a perfect detector would score on the file (TP weight per window).
    pub perfect: f64,
}

/// Each file's part of the raw score at `threshold` (what [`score_corpus`] sums), so one
/// can see which files lose points: `perfect − raw`, over the corpus' `perfect − null`.
pub fn file_scores(files: &[LabelledFile], profile: Profile, threshold: f64) -> Vec<FileScore> {
    files
        .iter()
        .map(|f| {
            let (points, ids) = sweep(f, &profile, 0);
            let mut best: Vec<Option<f64>> = vec![None; ids];
            let mut scored = vec![false; ids];
            let (mut fp_part, mut fps) = (0.0, 0);
            for p in &points {
                match p.window {
                    Some(w) => {
                        scored[w] = true;
                        if p.score >= threshold {
                            best[w] = Some(best[w].map_or(p.weight, |b: f64| b.max(p.weight)));
                        }
                    }
                    None if p.score >= threshold => {
                        fp_part += p.weight;
                        fps += 1;
                    }
                    None => {}
                }
            }
            let windows = scored.iter().filter(|s| **s).count();
            let window_part: f64 = (0..ids)
                .filter(|&w| scored[w])
                .map(|w| best[w].unwrap_or(-profile.fn_))
                .sum();
            FileScore {
                windows,
                detected: (0..ids).filter(|&w| scored[w] && best[w].is_some()).count(),
                false_positives: fps,
                raw: window_part + fp_part,
                perfect: profile.tp * windows as f64,
            }
        })
        .collect()
}

/// Labelled windows per file path, as read from a windows file.
pub type CorpusWindows = Vec<(String, Vec<(i64, i64)>)>;

/// Counts the raw labels of a NAB `labels.json` (file path → list of timestamps).
pub fn count_labels(json: &str) -> Result<usize, String> {
    let map: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_str(json).map_err(|e| format!("not a NAB labels file: {e}"))?;
    Ok(map.values().map(Vec::len).sum())
}

/// Reads a NAB `windows.json`: file path → list of `[start, end]` timestamps.
pub fn parse_windows(
    json: &str,
    parse_ts: impl Fn(&str) -> Result<i64, String>,
) -> Result<CorpusWindows, String> {
    let map: std::collections::BTreeMap<String, Vec<Vec<String>>> =
        serde_json::from_str(json).map_err(|e| format!("not a NAB windows file: {e}"))?;
    let mut out = Vec::with_capacity(map.len());
    for (path, windows) in map {
        let mut parsed = Vec::with_capacity(windows.len());
        for w in windows {
            let [start, end] = w.as_slice() else {
                return Err(format!("{path}: a window must be [start, end], got {w:?}"));
            };
            let start =
                parse_ts(start).map_err(|e| format!("{path}: window start {start}: {e}"))?;
            let end = parse_ts(end).map_err(|e| format!("{path}: window end {end}: {e}"))?;
            if end < start {
                return Err(format!("{path}: a window ends before it starts"));
            }
            parsed.push((start, end));
        }
        parsed.sort_unstable();
        out.push((path, parsed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: usize, windows: &[(usize, usize)], detections: &[usize]) -> LabelledFile {
        let mut scores = vec![0.0; n];
        for &d in detections {
            scores[d] = 1.0;
        }
        LabelledFile {
            timestamps: (0..n as i64).collect(),
            scores,
            windows: windows.iter().map(|&(a, b)| (a as i64, b as i64)).collect(),
        }
    }

    fn standard(files: &[LabelledFile]) -> CorpusScore {
        score_corpus(files, PROFILES[0])
    }

    #[test]
    fn the_scaled_sigmoid_matches_nab_s_documented_values() {
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 0.98661).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(3.0), -1.0);
        assert_eq!(probationary_length(1000), 150);
        assert_eq!(probationary_length(10_000), 750);
    }

    #[test]
    fn never_alarming_is_zero_and_the_left_edge_of_every_window_is_a_hundred() {
        let windows = [(200, 299), (600, 699)];
        assert_eq!(standard(&[file(1000, &windows, &[])]).normalized, 0.0);
        let perfect = standard(&[file(1000, &windows, &[200, 600])]);
        assert!((perfect.normalized - 100.0).abs() < 1e-9, "{perfect:?}");
        assert_eq!((perfect.detected, perfect.false_positives), (2, 0));
    }

    #[test]
    fn hand_computed_detection_in_the_middle_and_a_false_positive() {
        // One window of 100 points at 200..=299; a detection at 250: position
        // −(299 − 250 + 1)/100 = −0.5 → 0.84828 / 0.98661 of a TP. A detection at 160,
        // after the probation (150) and before any window, costs 0.11.
        // Raw = 0.85979 − 0.11; null −1, perfect 1.
        let s = standard(&[file(1000, &[(200, 299)], &[160, 250])]);
        let tp = scaled_sigmoid(-0.5) / scaled_sigmoid(-1.0);
        let raw = tp - 0.11;
        assert!((s.raw - raw).abs() < 1e-9, "{s:?}");
        assert!((s.normalized - 100.0 * (raw + 1.0) / 2.0).abs() < 1e-9);
        // Low-FP doubles the cost of the false positive; low-FN doubles the miss.
        let low_fp = score_corpus(&[file(1000, &[(200, 299)], &[160, 250])], PROFILES[1]);
        assert!((low_fp.raw - (tp - 0.22)).abs() < 1e-9);
        let low_fn = score_corpus(&[file(1000, &[(200, 299)], &[160, 250])], PROFILES[2]);
        assert!((low_fn.normalized - 100.0 * (tp - 0.11 + 2.0) / 3.0).abs() < 1e-9);
    }

    #[test]
    fn only_the_best_detection_of_a_window_counts_and_late_false_positives_cost_by_distance() {
        // Window 200..=299 (width 100). Detections at 210 and 290: only 210 counts. A
        // detection at 349: 50 points after the window's right edge, position 50/99.
        let s = standard(&[file(1000, &[(200, 299)], &[210, 290, 349])]);
        let tp = scaled_sigmoid(-(299.0 - 210.0 + 1.0) / 100.0) / scaled_sigmoid(-1.0);
        let fp = 0.11 * scaled_sigmoid(50.0 / 99.0);
        assert!((s.raw - (tp + fp)).abs() < 1e-9, "{s:?}");
        assert_eq!(s.false_positives, 1);
    }

    #[test]
    fn probationary_points_are_not_scored_and_the_threshold_is_optimised() {
        // A detection in the first 15 % costs nothing.
        let early = standard(&[file(1000, &[(500, 599)], &[10, 500])]);
        assert!((early.normalized - 100.0).abs() < 1e-9, "{early:?}");
        // Graded scores: 0.9 in the window, 0.95 far outside it. The best threshold is
        // 0.9 only if the false positive (−0.11) costs less than the window gains (+2).
        let mut f = file(1000, &[(500, 599)], &[]);
        f.scores[500] = 0.9;
        f.scores[300] = 0.95;
        let s = standard(&[f]);
        assert_eq!(s.threshold, 0.9);
        assert!((s.raw - (1.0 - 0.11)).abs() < 1e-9);
    }

    #[test]
    fn windows_file_is_read_with_nab_timestamps() {
        let json = r#"{"a/x.csv": [["2014-04-10 07:15:00.000000", "2014-04-11 16:45:00.000000"]], "b.csv": []}"#;
        let w = parse_windows(json, crate::time::parse_timestamp).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].0, "a/x.csv");
        assert_eq!(w[0].1[0].1 - w[0].1[0].0, (33 * 60 + 30) * 60_000);
        assert!(parse_windows("[]", crate::time::parse_timestamp).is_err());
        assert_eq!(count_labels(r#"{"a": ["x", "y"], "b": []}"#), Ok(2));
    }

    #[test]
    fn file_scores_add_up_to_the_corpus_raw_score() {
        let files = [
            file(1000, &[(200, 299)], &[160, 250]),
            file(1000, &[(500, 599), (800, 899)], &[510, 700]),
            file(1000, &[], &[400]),
        ];
        let corpus = standard(&files);
        let parts = file_scores(&files, PROFILES[0], corpus.threshold);
        let raw: f64 = parts.iter().map(|p| p.raw).sum();
        assert!((raw - corpus.raw).abs() < 1e-9, "{parts:?} vs {corpus:?}");
        assert_eq!(parts[1].windows, 2);
        assert_eq!(parts[1].detected, 1);
        assert_eq!(parts[1].false_positives, 1);
        assert_eq!(parts[2].false_positives, 1);
        assert_eq!(parts[2].perfect, 0.0);
        // The missed window costs −1 on the second file.
        assert!(parts[1].raw < 0.0);
    }

    #[test]
    fn nab_s_runner_normalises_by_the_number_of_labels() {
        // Two labels for one window: a perfect detection is 100 × (1 + 1) / (2 + 1).
        let f = file(1000, &[(200, 299)], &[200]);
        let s = score_corpus_with(&[f], PROFILES[0], Some(2));
        assert!((s.normalized - 200.0 / 3.0).abs() < 1e-9, "{s:?}");
    }
}
