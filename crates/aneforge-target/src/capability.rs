//! Capability gates: which family first compiles a feature, so the validator
//! can refuse a graph with "first supported on H15" and a decomposition hint.

use crate::table::{capability_row, targets, Target};

/// A feature that only some families compile. The first family of each lives
/// in the data file; this enum is the name the core validator uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// MIL programs at all (H11/H12/M9/T0 predate MIL).
    Mil,
    /// int4 palettized (LUT) weight streaming.
    Int4LutStream,
    /// Sparse weight streaming.
    SparseStream,
    /// Texture-engine ops: resize, crop-resize, resample, affine, gather.
    TextureOps,
    /// topk, sort, argsort, dynamic_slice.
    TopkSort,
    /// int8 weight streaming.
    Int8Stream,
    /// Native sin and cos (below: polynomial decomposition).
    SinCos,
    /// Dropout and random number generation.
    DropoutRng,
    /// Global argmax / argmin.
    GlobalArgmax,
    /// Blockwise (per-block scale) weight streaming.
    BlockwiseStream,
    /// W8A8 int8 compute.
    W8A8,
    /// fp8 E4M3 activations.
    Fp8E4M3,
}

impl Capability {
    /// Every capability, for listings and exhaustive tests.
    pub const ALL: [Capability; 12] = [
        Capability::Mil,
        Capability::Int4LutStream,
        Capability::SparseStream,
        Capability::TextureOps,
        Capability::TopkSort,
        Capability::Int8Stream,
        Capability::SinCos,
        Capability::DropoutRng,
        Capability::GlobalArgmax,
        Capability::BlockwiseStream,
        Capability::W8A8,
        Capability::Fp8E4M3,
    ];

    /// The key of this capability in the data file (also a stable name for Python).
    pub fn key(self) -> &'static str {
        match self {
            Capability::Mil => "mil",
            Capability::Int4LutStream => "int4_lut_stream",
            Capability::SparseStream => "sparse_stream",
            Capability::TextureOps => "texture_ops",
            Capability::TopkSort => "topk_sort",
            Capability::Int8Stream => "int8_stream",
            Capability::SinCos => "sin_cos",
            Capability::DropoutRng => "dropout_rng",
            Capability::GlobalArgmax => "global_argmax",
            Capability::BlockwiseStream => "blockwise_stream",
            Capability::W8A8 => "w8a8",
            Capability::Fp8E4M3 => "fp8_e4m3",
        }
    }

    /// Parses a data-file / Python key back into a capability.
    pub fn from_key(key: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.key() == key)
    }

    /// Numeric family (13 for H13, ...) from which the feature compiles.
    pub fn first_tier(self) -> u8 {
        // A missing row is caught by the `every_capability_has_a_row` test;
        // u8::MAX keeps the gate closed rather than open if it ever slipped.
        capability_row(self.key()).map_or(u8::MAX, |r| r.first_tier)
    }

    /// The first family that supports it, e.g. `"H15"`, for error messages.
    pub fn first_family(self) -> String {
        format!("H{}", self.first_tier())
    }

    /// What the capability covers, in words.
    pub fn description(self) -> &'static str {
        capability_row(self.key()).map_or("", |r| r.what.as_str())
    }

    /// What a user (or the rewriter) can do on a family below the first one.
    pub fn decomposition_hint(self) -> &'static str {
        capability_row(self.key()).map_or("", |r| r.hint.as_str())
    }

    /// Where the gate comes from.
    pub fn source(self) -> &'static str {
        capability_row(self.key()).map_or("", |r| r.source.as_str())
    }
}

/// The shape limits the validator checks, grouped so it can report every
/// violation of a node at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Spatial / contraction axis limit.
    pub max_axis: u64,
    /// Channel axis limit.
    pub max_channels: u64,
    /// Conv kernel width limit.
    pub max_conv_kernel_width: u64,
    /// Rank limit.
    pub max_rank: usize,
}

impl Target {
    /// The shape limits of this target.
    pub fn limits(&self) -> Limits {
        Limits {
            max_axis: self.max_axis,
            max_channels: self.max_channels,
            max_conv_kernel_width: self.max_conv_kernel_width,
            max_rank: self.max_rank,
        }
    }

    /// Whether an axis of this length (spatial or contraction) compiles.
    pub fn axis_ok(&self, len: u64) -> bool {
        len <= self.max_axis
    }

    /// Whether a channel count compiles.
    pub fn channels_ok(&self, c: u64) -> bool {
        c <= self.max_channels
    }

    /// Whether a conv kernel this wide compiles.
    pub fn conv_kernel_width_ok(&self, kw: u64) -> bool {
        kw <= self.max_conv_kernel_width
    }

    /// Whether a tensor of this rank compiles.
    pub fn rank_ok(&self, rank: usize) -> bool {
        rank <= self.max_rank
    }

    /// Every capability this target has, for `af.targets()` listings.
    pub fn capabilities(&self) -> Vec<Capability> {
        Capability::ALL
            .into_iter()
            .filter(|c| self.supports(*c))
            .collect()
    }
}

/// Which shape limit a tensor or kernel broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// More than `max_rank` axes.
    Rank,
    /// A spatial / contraction axis longer than `max_axis`.
    Axis,
    /// A channel axis longer than `max_channels`.
    Channels,
    /// A conv kernel wider than `max_conv_kernel_width`.
    ConvKernelWidth,
}

/// One broken limit, with what the validator needs for its message: the
/// value, the limit, the first family that would accept it and a rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitViolation {
    /// Which limit.
    pub kind: LimitKind,
    /// The offending axis index, for axis and channel limits.
    pub axis: Option<usize>,
    /// The offending value (length, rank or width).
    pub value: u64,
    /// The target's limit.
    pub max: u64,
    /// First family that accepts the value, if any does.
    pub first_family: Option<String>,
    /// How to get under the limit (tiling, splitting, merging axes).
    pub hint: String,
}

impl Target {
    /// Every limit a tensor shape breaks on this target, all at once, so the
    /// validator can report a graph's violations in one pass. `channel_axis`
    /// is checked against the channel limit; every other axis against the
    /// spatial / contraction limit.
    pub fn check_shape(&self, shape: &[u64], channel_axis: Option<usize>) -> Vec<LimitViolation> {
        let mut out = Vec::new();
        if !self.rank_ok(shape.len()) {
            out.push(LimitViolation {
                kind: LimitKind::Rank,
                axis: None,
                value: shape.len() as u64,
                max: self.max_rank as u64,
                first_family: None,
                hint: format!(
                    "merge adjacent axes with a reshape to reach rank {}",
                    self.max_rank
                ),
            });
        }
        for (i, &len) in shape.iter().enumerate() {
            if Some(i) == channel_axis {
                if !self.channels_ok(len) {
                    out.push(LimitViolation {
                        kind: LimitKind::Channels,
                        axis: Some(i),
                        value: len,
                        max: self.max_channels,
                        first_family: None,
                        hint: format!(
                            "split the channel axis into {} groups of at most {} and concatenate",
                            len.div_ceil(self.max_channels),
                            self.max_channels
                        ),
                    });
                }
            } else if !self.axis_ok(len) {
                out.push(LimitViolation {
                    kind: LimitKind::Axis,
                    axis: Some(i),
                    value: len,
                    max: self.max_axis,
                    first_family: first_family_for_axis(len),
                    hint: format!(
                        "tile axis {i} into {} pieces of at most {} (the validator can do this)",
                        len.div_ceil(self.max_axis),
                        self.max_axis
                    ),
                });
            }
        }
        out
    }

    /// The violation, if a conv kernel of width `kw` is too wide here.
    pub fn check_conv_kernel_width(&self, kw: u64) -> Option<LimitViolation> {
        if self.conv_kernel_width_ok(kw) {
            return None;
        }
        Some(LimitViolation {
            kind: LimitKind::ConvKernelWidth,
            axis: None,
            value: kw,
            max: self.max_conv_kernel_width,
            first_family: first_family_for_conv_kernel_width(kw),
            hint: format!(
                "split the kernel into pieces at most {} wide, convolve each on a shifted input and add",
                self.max_conv_kernel_width
            ),
        })
    }
}

/// The first mainline family (H13..H18) whose limit admits an axis of `len`,
/// so "axis 20000" can say "first supported on H16". None if no family does.
pub fn first_family_for_axis(len: u64) -> Option<String> {
    first_family_where(|t| t.axis_ok(len))
}

/// The first mainline family whose conv kernel-width limit admits `kw`.
pub fn first_family_for_conv_kernel_width(kw: u64) -> Option<String> {
    first_family_where(|t| t.conv_kernel_width_ok(kw))
}

fn first_family_where(ok: impl Fn(&Target) -> bool) -> Option<String> {
    targets()
        .iter()
        .filter(|t| t.mil_supported && t.name == t.family)
        .filter(|t| ok(t))
        .min_by_key(|t| t.tier)
        .map(|t| t.family.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::lookup;

    fn t(name: &str) -> &'static Target {
        lookup(name).expect("known target")
    }

    #[test]
    fn every_capability_has_a_row_and_keys_round_trip() {
        for c in Capability::ALL {
            assert!(
                capability_row(c.key()).is_some(),
                "{c:?} missing from data file"
            );
            assert_eq!(Capability::from_key(c.key()), Some(c));
            assert!(!c.decomposition_hint().is_empty());
        }
        assert_eq!(Capability::from_key("warp_drive"), None);
    }

    #[test]
    fn first_families_follow_targets_md() {
        use Capability::*;
        let expect = [
            (Mil, "H13"),
            (Int4LutStream, "H13"),
            (SparseStream, "H13"),
            (TextureOps, "H14"),
            (TopkSort, "H14"),
            (Int8Stream, "H14"),
            (SinCos, "H15"),
            (DropoutRng, "H15"),
            (GlobalArgmax, "H15"),
            (BlockwiseStream, "H15"),
            (W8A8, "H16"),
            (Fp8E4M3, "H18"),
        ];
        for (c, fam) in expect {
            assert_eq!(c.first_family(), fam, "{c:?}");
        }
    }

    #[test]
    fn sin_cos_is_native_on_h15_not_h14() {
        assert!(t("h15").supports(Capability::SinCos));
        assert!(t("h15g").supports(Capability::SinCos));
        assert!(!t("h14").supports(Capability::SinCos));
        assert!(!t("h14c").supports(Capability::SinCos));
    }

    #[test]
    fn texture_ops_start_at_h14() {
        assert!(t("h14g").supports(Capability::TextureOps));
        assert!(!t("h13g").supports(Capability::TextureOps));
        assert!(!t("t1").supports(Capability::TextureOps));
    }

    #[test]
    fn w8a8_from_h16_and_fp8_only_on_h18() {
        assert!(t("h16").supports(Capability::W8A8));
        assert!(!t("h15c").supports(Capability::W8A8));
        assert!(t("h18").supports(Capability::Fp8E4M3));
        assert!(!t("h17d").supports(Capability::Fp8E4M3));
    }

    #[test]
    fn no_mil_families_support_nothing() {
        for n in ["h11", "h12", "m9", "t0"] {
            assert!(!t(n).supports(Capability::Mil), "{n}");
            assert!(t(n).capabilities().is_empty(), "{n}");
        }
        assert!(t("h13").supports(Capability::Mil));
        assert!(t("u2").supports(Capability::Mil));
    }

    #[test]
    fn m11_is_gated_as_the_a15_tier() {
        assert!(t("m11").supports(Capability::SinCos));
        assert!(!t("m11").supports(Capability::W8A8));
    }

    #[test]
    fn axis_20000_compiles_on_h16_not_h15() {
        assert!(t("h16").axis_ok(20000));
        assert!(t("h16s").axis_ok(65536));
        assert!(!t("h16s").axis_ok(65537));
        assert!(!t("h15").axis_ok(20000));
        assert!(t("h15").axis_ok(16384));
        assert_eq!(first_family_for_axis(20000).as_deref(), Some("H16"));
        assert_eq!(first_family_for_axis(100), Some("H13".to_string()));
        assert_eq!(first_family_for_axis(70000), None);
    }

    #[test]
    fn kernel_width_14_compiles_on_h16_not_h13() {
        assert!(t("h16").conv_kernel_width_ok(14));
        assert!(t("h17s").conv_kernel_width_ok(15));
        assert!(!t("h17s").conv_kernel_width_ok(16));
        assert!(!t("h13").conv_kernel_width_ok(14));
        assert!(!t("h15").conv_kernel_width_ok(14));
        assert!(t("h13").conv_kernel_width_ok(13));
        assert_eq!(
            first_family_for_conv_kernel_width(14).as_deref(),
            Some("H16")
        );
    }

    #[test]
    fn rank_and_channel_limits_are_the_same_everywhere() {
        for tg in crate::table::targets() {
            assert!(tg.rank_ok(5) && !tg.rank_ok(6));
            assert!(tg.channels_ok(65536) && !tg.channels_ok(65537));
        }
    }

    #[test]
    fn check_shape_reports_every_violation_at_once() {
        let v = t("h15").check_shape(&[1, 70000, 1, 20000, 3, 2], Some(1));
        let kinds: Vec<LimitKind> = v.iter().map(|x| x.kind).collect();
        assert_eq!(
            kinds,
            [LimitKind::Rank, LimitKind::Channels, LimitKind::Axis]
        );
        assert_eq!(v[2].axis, Some(3));
        assert_eq!(v[2].first_family.as_deref(), Some("H16"));
        assert!(v[2].hint.contains("tile"));
        assert!(t("h16")
            .check_shape(&[1, 512, 1, 20000], Some(1))
            .is_empty());
    }

    #[test]
    fn check_conv_kernel_width_names_the_first_family() {
        let v = t("h13")
            .check_conv_kernel_width(14)
            .expect("too wide on h13");
        assert_eq!(v.first_family.as_deref(), Some("H16"));
        assert_eq!(v.max, 13);
        assert!(t("h16").check_conv_kernel_width(14).is_none());
        assert_eq!(
            t("h18")
                .check_conv_kernel_width(16)
                .expect("too wide")
                .first_family,
            None
        );
    }
}
