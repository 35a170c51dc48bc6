//! The target table, parsed once from the embedded `data/targets.tsv`.
//!
//! Keeping every number in one data file (with a source note per row) lets a
//! reviewer check a figure against its source without reading code, and lets
//! the numbers change without touching the logic that reads them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::capability::Capability;
use crate::error::TargetError;

const DATA: &str = include_str!("../data/targets.tsv");

/// One compiler target (`TargetArchitecture=<name>`) and what the engine
/// behind it can do. Validation and the estimator read this and nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Canonical spelling, e.g. `"H16s"`; lookups accept any case.
    pub name: String,
    /// The capability family the row is gated as, e.g. `"H16"`.
    pub family: String,
    /// Numeric part of `family`; gates compare against it.
    pub tier: u8,
    /// Whether the target accepts MIL programs at all (compile refuses it otherwise).
    pub mil_supported: bool,
    /// Example chips, for messages and `af.targets()`.
    pub chips: Vec<String>,
    /// Neural-engine cores one program sees.
    pub cores: u32,
    /// Compiler HAL maximum clock, GHz.
    pub fmax_ghz: f64,
    /// Theoretical fp16 peak, TFLOP/s (2 x 256 MAC x cores x fmax).
    pub fp16_tflops: f64,
    /// Weight-stream bandwidth, GB/s.
    pub weight_gbs: f64,
    /// Activation bandwidth of the DRAM activation path, GB/s.
    pub act_gbs: f64,
    /// Per-dispatch floor, microseconds.
    pub floor_us: f64,
    /// On-chip operand buffer, bytes; larger working sets spill to DRAM.
    pub sram_bytes: f64,
    /// Spatial / contraction axis limit.
    pub max_axis: u64,
    /// Channel axis limit.
    pub max_channels: u64,
    /// Conv kernel width limit.
    pub max_conv_kernel_width: u64,
    /// Tensor rank limit.
    pub max_rank: usize,
    /// Where the numbers come from.
    pub source: String,
    /// The chip profile these numbers were specialised to, if any.
    pub chip: Option<String>,
}

impl Target {
    /// Lower-case name, the spelling the system compiler takes.
    pub fn lower_name(&self) -> String {
        self.name.to_ascii_lowercase()
    }

    /// Whether programs for this target may use `cap`. A target without MIL
    /// supports nothing, because nothing compiles for it.
    pub fn supports(&self, cap: Capability) -> bool {
        self.mil_supported && self.tier >= cap.first_tier()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} family{}; {}): {} cores @ {} GHz, {:.2} TFLOP/s fp16 peak, weights {} GB/s, \
             activations {} GB/s, floor {} us, on-chip {:.2} MB, axis <= {}, kernel width <= {}",
            self.lower_name(),
            self.family,
            if self.mil_supported { "" } else { ", no MIL" },
            self.chip.clone().unwrap_or_else(|| self.chips.join(", ")),
            self.cores,
            self.fmax_ghz,
            self.fp16_tflops,
            self.weight_gbs,
            self.act_gbs,
            self.floor_us,
            self.sram_bytes / 1e6,
            self.max_axis,
            self.max_conv_kernel_width
        )
    }
}

/// A physical SoC: it compiles for one target but has its own memory system,
/// so the estimator wants its bandwidth and dispatch floor, not the target's.
#[derive(Debug, Clone, PartialEq)]
pub struct Chip {
    /// Marketing name, e.g. `"M5 Pro"`.
    pub name: String,
    /// The compiler target it reports.
    pub target: String,
    /// Weight-stream bandwidth, GB/s.
    pub weight_gbs: f64,
    /// Activation bandwidth, GB/s.
    pub act_gbs: f64,
    /// Dispatch floor, microseconds.
    pub floor_us: f64,
    /// Where the numbers come from.
    pub source: String,
}

/// Per-capability data from the table: the first family and what to do below it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CapabilityRow {
    pub first_tier: u8,
    pub what: String,
    pub hint: String,
    pub source: String,
}

/// A published measurement the estimator is calibrated against.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationPoint {
    /// Model key understood by [`crate::calibration::model_ops`].
    pub model: String,
    /// Chip it was measured on.
    pub chip: String,
    /// Published latency, milliseconds.
    pub ms: f64,
    /// True when the fit never sees this point.
    pub held_out: bool,
    /// Where it was published.
    pub source: String,
}

pub(crate) struct Table {
    pub targets: Vec<Target>,
    pub chips: Vec<Chip>,
    pub capabilities: BTreeMap<String, CapabilityRow>,
    pub calibration: Vec<CalibrationPoint>,
}

/// Splits the data file into sections of rows keyed by header name.
fn sections(data: &str) -> Result<BTreeMap<String, Vec<BTreeMap<String, String>>>, String> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut header: Option<Vec<String>> = None;
    for (i, raw) in data.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_string());
            header = None;
            out.entry(name.to_string()).or_default();
            continue;
        }
        let section = current
            .clone()
            .ok_or_else(|| format!("line {}: data before any [section]", i + 1))?;
        let cells: Vec<String> = line.split('\t').map(|c| c.trim().to_string()).collect();
        match &header {
            None => header = Some(cells),
            Some(h) => {
                if cells.len() != h.len() {
                    return Err(format!(
                        "line {}: [{section}] row has {} cells, header has {}",
                        i + 1,
                        cells.len(),
                        h.len()
                    ));
                }
                let row = h.iter().cloned().zip(cells).collect();
                out.entry(section).or_default().push(row);
            }
        }
    }
    Ok(out)
}

fn cell<'a>(row: &'a BTreeMap<String, String>, col: &str) -> Result<&'a str, String> {
    row.get(col)
        .map(String::as_str)
        .ok_or_else(|| format!("missing column {col}"))
}

fn num<T: std::str::FromStr>(row: &BTreeMap<String, String>, col: &str) -> Result<T, String> {
    let s = cell(row, col)?;
    s.parse()
        .map_err(|_| format!("column {col}: cannot parse {s:?}"))
}

fn parse_table(data: &str) -> Result<Table, String> {
    let secs = sections(data)?;
    let get = |name: &str| {
        secs.get(name)
            .ok_or_else(|| format!("missing section [{name}]"))
    };
    let mut targets = Vec::new();
    for row in get("targets")? {
        let name = cell(row, "name")?.to_string();
        let ctx = |e: String| format!("target {name}: {e}");
        let family = cell(row, "family").map_err(ctx)?.to_string();
        let tier: u8 = num(row, "tier").map_err(ctx)?;
        if family != format!("H{tier}") {
            return Err(ctx(format!("family {family} does not match tier {tier}")));
        }
        targets.push(Target {
            family,
            tier,
            mil_supported: num::<u8>(row, "mil").map_err(ctx)? == 1,
            chips: cell(row, "chips")
                .map_err(ctx)?
                .split('/')
                .map(|s| s.trim().to_string())
                .collect(),
            cores: num(row, "cores").map_err(ctx)?,
            fmax_ghz: num(row, "fmax_ghz").map_err(ctx)?,
            fp16_tflops: num(row, "fp16_tflops").map_err(ctx)?,
            weight_gbs: num(row, "weight_gbs").map_err(ctx)?,
            act_gbs: num(row, "act_gbs").map_err(ctx)?,
            floor_us: num(row, "floor_us").map_err(ctx)?,
            sram_bytes: num::<f64>(row, "sram_mb").map_err(ctx)? * 1e6,
            max_axis: num(row, "max_axis").map_err(ctx)?,
            max_channels: num(row, "max_channels").map_err(ctx)?,
            max_conv_kernel_width: num(row, "max_kw").map_err(ctx)?,
            max_rank: num(row, "max_rank").map_err(ctx)?,
            source: cell(row, "source").map_err(ctx)?.to_string(),
            chip: None,
            name,
        });
    }
    let mut chips = Vec::new();
    for row in get("chips")? {
        let name = cell(row, "chip")?.to_string();
        let ctx = |e: String| format!("chip {name}: {e}");
        let target = cell(row, "target").map_err(ctx)?.to_string();
        if !targets.iter().any(|t| t.name == target) {
            return Err(ctx(format!("unknown target {target}")));
        }
        chips.push(Chip {
            target,
            weight_gbs: num(row, "weight_gbs").map_err(ctx)?,
            act_gbs: num(row, "act_gbs").map_err(ctx)?,
            floor_us: num(row, "floor_us").map_err(ctx)?,
            source: cell(row, "source").map_err(ctx)?.to_string(),
            name,
        });
    }
    let mut capabilities = BTreeMap::new();
    for row in get("capabilities")? {
        let name = cell(row, "capability")?.to_string();
        let first = cell(row, "first")?;
        let first_tier: u8 = first
            .strip_prefix('H')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("capability {name}: bad family {first}"))?;
        capabilities.insert(
            name,
            CapabilityRow {
                first_tier,
                what: cell(row, "what")?.to_string(),
                hint: cell(row, "hint")?.to_string(),
                source: cell(row, "source")?.to_string(),
            },
        );
    }
    let mut calibration = Vec::new();
    for row in get("calibration")? {
        let chip = cell(row, "chip")?.to_string();
        if !chips.iter().any(|c| c.name == chip) {
            return Err(format!("calibration point on unknown chip {chip}"));
        }
        calibration.push(CalibrationPoint {
            model: cell(row, "model")?.to_string(),
            chip,
            ms: num(row, "ms")?,
            held_out: num::<u8>(row, "held_out")? == 1,
            source: cell(row, "source")?.to_string(),
        });
    }
    Ok(Table {
        targets,
        chips,
        capabilities,
        calibration,
    })
}

pub(crate) fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| match parse_table(DATA) {
        Ok(t) => t,
        // The file is compiled in and parsed by a unit test, so this is a
        // build defect, never a user input problem.
        Err(e) => panic!("aneforge-target: embedded data/targets.tsv is malformed: {e}"),
    })
}

/// All 28 targets in table order (oldest family first), for `af.targets()`.
pub fn targets() -> &'static [Target] {
    &table().targets
}

/// All chip profiles in table order.
pub fn chips() -> &'static [Chip] {
    &table().chips
}

/// The published measurements the estimator is calibrated on.
pub fn calibration_points() -> &'static [CalibrationPoint] {
    &table().calibration
}

/// Every valid target name, lower case, space-separated (for error messages).
pub fn valid_names() -> String {
    targets()
        .iter()
        .map(Target::lower_name)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Finds a target by name, any case (`"h16s"`, `"H16S"`). Unknown names are
/// refused with the valid list and the nearest name, because the system
/// compiler would silently build for the host instead.
pub fn lookup(name: &str) -> Result<&'static Target, TargetError> {
    let key = name.trim();
    if let Some(t) = targets().iter().find(|t| t.name.eq_ignore_ascii_case(key)) {
        return Ok(t);
    }
    Err(TargetError::UnknownTarget {
        name: name.to_string(),
        suggestion: suggest(key),
        valid: valid_names(),
    })
}

/// Finds a chip profile by marketing name, any case and spacing
/// (`"m5 pro"`, `"M5Pro"`, `"a17pro"`).
pub fn chip(name: &str) -> Result<&'static Chip, TargetError> {
    let key = squash(name);
    chips()
        .iter()
        .find(|c| squash(&c.name) == key)
        .ok_or_else(|| TargetError::UnknownChip {
            name: name.to_string(),
            valid: chips()
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The target row of `chip_name` with that chip's bandwidth and floor put in
/// place: what the estimator should use when the user names a chip.
pub fn chip_profile(chip_name: &str) -> Result<Target, TargetError> {
    let c = chip(chip_name)?;
    let base = lookup(&c.target)?;
    Ok(Target {
        weight_gbs: c.weight_gbs,
        act_gbs: c.act_gbs,
        floor_us: c.floor_us,
        chip: Some(c.name.clone()),
        ..base.clone()
    })
}

/// What the estimator should use for a name the user gave: a target name
/// (any case) gives its row; otherwise a chip name (`"M5 Pro"`, `"a16"`) gives
/// its chip profile. Anything else is refused like an unknown target.
pub fn profile(name: &str) -> Result<Target, TargetError> {
    match lookup(name) {
        Ok(t) => Ok(t.clone()),
        Err(e) => chip_profile(name).map_err(|_| e),
    }
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The did-you-mean for an unknown name: a chip name maps to its target
/// (users often type "m1"); otherwise the nearest name within one edit (two
/// for names longer than three characters).
fn suggest(name: &str) -> Option<String> {
    if let Ok(c) = chip(name) {
        return Some(c.target.to_ascii_lowercase());
    }
    let lower = name.to_ascii_lowercase();
    // Names are 2-4 characters: two edits on a 3-character name is a different
    // name, not a typo.
    let max_edits = if lower.chars().count() <= 3 { 1 } else { 2 };
    targets()
        .iter()
        .map(|t| (edit_distance(&lower, &t.lower_name()), t.lower_name()))
        .filter(|(d, _)| *d <= max_edits)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Edit distance counting insertions, deletions, substitutions and adjacent
/// transpositions (optimal string alignment): "h71s" is one typo from "h17s".
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

pub(crate) fn capability_row(key: &str) -> Option<&'static CapabilityRow> {
    table().capabilities.get(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 28] = [
        "H11", "H12", "M9", "T0", "H13", "H13g", "T1", "H14", "H14g", "H14c", "H15", "H15g",
        "H15c", "H16", "H16g", "H16s", "H16c", "H17", "H17a", "H17g", "H17s", "H17c", "H17d",
        "H18", "M11", "U1", "U2", "U3",
    ];

    #[test]
    fn embedded_table_parses() {
        assert!(parse_table(DATA).is_ok(), "{:?}", parse_table(DATA).err());
    }

    #[test]
    fn table_holds_exactly_the_28_compiler_targets() {
        let names: Vec<&str> = targets().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, NAMES);
    }

    #[test]
    fn every_name_round_trips_in_any_case() {
        for n in NAMES {
            assert_eq!(lookup(n).map(|t| t.name.as_str()), Ok(n));
            assert_eq!(
                lookup(&n.to_ascii_lowercase()).map(|t| t.name.as_str()),
                Ok(n)
            );
            assert_eq!(
                lookup(&n.to_ascii_uppercase()).map(|t| t.name.as_str()),
                Ok(n)
            );
            let t = lookup(n).expect("known");
            assert_eq!(lookup(&t.lower_name()).expect("lower").name, t.name);
        }
        assert_eq!(lookup("h16s").expect("h16s").name, "H16s");
    }

    #[test]
    fn unknown_name_lists_valid_names_and_suggests_the_nearest() {
        let err = lookup("h16x").unwrap_err();
        match &err {
            TargetError::UnknownTarget {
                suggestion, valid, ..
            } => {
                assert!(suggestion.is_some());
                assert_eq!(valid.split(' ').count(), 28);
            }
            e => panic!("wrong error {e:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("did you mean"), "{msg}");
        assert!(msg.contains("h17d") && msg.contains("u3"), "{msg}");

        let TargetError::UnknownTarget { suggestion, .. } = lookup("h71s").unwrap_err() else {
            panic!()
        };
        assert_eq!(suggestion.as_deref(), Some("h17s"));
        let TargetError::UnknownTarget { suggestion, .. } = lookup("h71").unwrap_err() else {
            panic!()
        };
        assert!(suggestion.is_some());
        let TargetError::UnknownTarget { suggestion, .. } = lookup("m77").unwrap_err() else {
            panic!()
        };
        assert_eq!(suggestion, None);
        let TargetError::UnknownTarget { suggestion, .. } = lookup("completely-wrong").unwrap_err()
        else {
            panic!()
        };
        assert_eq!(suggestion, None);
    }

    #[test]
    fn chip_names_suggest_their_target() {
        let TargetError::UnknownTarget { suggestion, .. } = lookup("M1").unwrap_err() else {
            panic!()
        };
        assert_eq!(suggestion.as_deref(), Some("h13"));
        let TargetError::UnknownTarget { suggestion, .. } = lookup("m5 pro").unwrap_err() else {
            panic!()
        };
        assert_eq!(suggestion.as_deref(), Some("h17s"));
        // M9 and M11 are compiler targets, not chips.
        assert_eq!(lookup("m11").expect("m11").name, "M11");
    }

    #[test]
    fn empty_name_is_refused() {
        assert!(matches!(lookup(""), Err(TargetError::UnknownTarget { .. })));
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("h16s", "h16s"), 0);
        assert_eq!(edit_distance("h16", "h16s"), 1);
        assert_eq!(edit_distance("h61", "h16"), 1);
        assert_eq!(edit_distance("h61", "h11"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn fp16_peak_column_matches_the_formula() {
        for t in targets() {
            let formula = 2.0 * 256.0 * f64::from(t.cores) * t.fmax_ghz / 1000.0;
            assert!(
                (formula - t.fp16_tflops).abs() < 0.011,
                "{}: table {} formula {formula}",
                t.name,
                t.fp16_tflops
            );
        }
    }

    #[test]
    fn every_row_has_a_source_and_sane_numbers() {
        for t in targets() {
            assert!(!t.source.is_empty(), "{}", t.name);
            assert!(t.weight_gbs > 0.0 && t.act_gbs > 0.0 && t.floor_us > 0.0);
            assert!(t.sram_bytes > 0.0 && t.cores > 0 && t.fmax_ghz > 0.0);
            assert_eq!(t.max_rank, 5);
            assert_eq!(t.max_channels, 65536);
            let (axis, kw) = if t.tier >= 16 {
                (65536, 15)
            } else {
                (16384, 13)
            };
            assert_eq!(
                (t.max_axis, t.max_conv_kernel_width),
                (axis, kw),
                "{}",
                t.name
            );
        }
        for c in chips() {
            assert!(!c.source.is_empty(), "{}", c.name);
        }
    }

    #[test]
    fn no_mil_targets_are_exactly_the_four_old_ones() {
        let no_mil: Vec<&str> = targets()
            .iter()
            .filter(|t| !t.mil_supported)
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(no_mil, ["H11", "H12", "M9", "T0"]);
    }

    #[test]
    fn chip_profiles_override_memory_numbers_only() {
        let p = chip_profile("a16").expect("A16");
        let base = lookup("h15").expect("H15");
        assert_eq!(p.name, "H15");
        assert_eq!(p.chip.as_deref(), Some("A16"));
        assert_eq!(p.fmax_ghz, base.fmax_ghz);
        assert_ne!(p.weight_gbs, base.weight_gbs);
        assert_eq!(chip_profile("M5Pro").expect("m5 pro").name, "H17s");
        assert!(matches!(
            chip_profile("M99"),
            Err(TargetError::UnknownChip { .. })
        ));
    }

    #[test]
    fn display_names_the_target_and_its_family() {
        let s = lookup("h11").expect("t").to_string();
        assert!(s.starts_with("h11 (H11 family, no MIL"), "{s}");
        let s = chip_profile("M5 Pro").expect("c").to_string();
        assert!(s.contains("M5 Pro") && s.contains("19.37"), "{s}");
    }

    #[test]
    fn profile_takes_targets_or_chips() {
        assert_eq!(profile("h16s").expect("t").chip, None);
        assert_eq!(
            profile("M5 Pro").expect("c").chip.as_deref(),
            Some("M5 Pro")
        );
        assert!(matches!(
            profile("m77"),
            Err(TargetError::UnknownTarget { .. })
        ));
    }
}
