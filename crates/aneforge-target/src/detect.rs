//! Host detection: which target the machine we run on compiles for.
//!
//! The pure parts (`target_for_brand`, `resolve`) are separate from the parts
//! that read the environment or run `sysctl`, so tests never touch either.

use crate::error::TargetError;
use crate::table::{lookup, Target};

/// Environment variable that overrides detection (any target name, any case).
pub const TARGET_ENV: &str = "ANEFORGE_TARGET";

/// The target a CPU brand string (`sysctl machdep.cpu.brand_string`) implies.
///
/// M(n) is family H(n+12). Within a family the suffix follows what each part
/// reports where that is known: the base M4 reports `h16g`, the M5 Pro/Max
/// `h17s`, the M1/M2/M3 Pro and Max `h1Ng`; otherwise the family's base name.
/// Returns None for anything that is not an Apple M-series brand (Intel Macs,
/// Linux, an M generation we have no target for).
pub fn target_for_brand(brand: &str) -> Option<&'static Target> {
    let rest = brand.trim().strip_prefix("Apple M")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let gen: u32 = digits.parse().ok()?;
    let tail = rest[digits.len()..].trim().to_ascii_lowercase();
    let big = tail.starts_with("pro") || tail.starts_with("max") || tail.starts_with("ultra");
    let name = match (gen, big) {
        (1..=3, true) => format!("h{}g", gen + 12),
        (4, _) => "h16g".to_string(),
        (5, true) => "h17s".to_string(),
        _ => format!("h{}", gen + 12),
    };
    lookup(&name).ok()
}

/// Detection from already-read inputs: an `ANEFORGE_TARGET` value wins (and an
/// unknown name there is an error, never a silent fallback); otherwise the
/// brand string decides; otherwise None.
pub fn resolve(
    env_override: Option<&str>,
    brand: Option<&str>,
) -> Result<Option<&'static Target>, TargetError> {
    match env_override.map(str::trim).filter(|s| !s.is_empty()) {
        Some(name) => lookup(name).map(Some),
        None => Ok(brand.and_then(target_for_brand)),
    }
}

/// The target of this host: `ANEFORGE_TARGET` if set, else (macOS) the CPU
/// brand, else None. Off macOS there is no engine to detect, so None is the
/// honest answer, not an error.
pub fn detect_family() -> Result<Option<&'static Target>, TargetError> {
    let env = std::env::var(TARGET_ENV).ok();
    resolve(env.as_deref(), host_brand().as_deref())
}

#[cfg(target_os = "macos")]
fn host_brand() -> Option<String> {
    let out = std::process::Command::new("sysctl")
        .args(["-n", "machdep.cpu.brand_string"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

#[cfg(not(target_os = "macos"))]
fn host_brand() -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(brand: &str) -> Option<&'static str> {
        target_for_brand(brand).map(|t| t.name.as_str())
    }

    #[test]
    fn m_series_maps_to_h_n_plus_12() {
        assert_eq!(name("Apple M1"), Some("H13"));
        assert_eq!(name("Apple M1 Max"), Some("H13g"));
        assert_eq!(name("Apple M2"), Some("H14"));
        assert_eq!(name("Apple M2 Pro"), Some("H14g"));
        assert_eq!(name("Apple M3"), Some("H15"));
        assert_eq!(name("Apple M4"), Some("H16g"));
        assert_eq!(name("Apple M4 Max"), Some("H16g"));
        assert_eq!(name("Apple M5"), Some("H17"));
        assert_eq!(name("Apple M5 Pro"), Some("H17s"));
        assert_eq!(name("Apple M6\n"), Some("H18"));
    }

    #[test]
    fn non_apple_or_unknown_generation_is_none() {
        assert_eq!(name("Intel(R) Core(TM) i9-9980HK CPU @ 2.40GHz"), None);
        assert_eq!(name("Apple M9"), None);
        assert_eq!(name(""), None);
    }

    #[test]
    fn env_override_wins_and_is_validated() {
        let t = resolve(Some("h16s"), Some("Apple M1")).expect("valid");
        assert_eq!(t.map(|t| t.name.as_str()), Some("H16s"));
        assert!(matches!(
            resolve(Some("h99"), Some("Apple M1")),
            Err(TargetError::UnknownTarget { .. })
        ));
        let t = resolve(Some("  "), Some("Apple M1")).expect("blank ignored");
        assert_eq!(t.map(|t| t.name.as_str()), Some("H13"));
        assert_eq!(resolve(None, None), Ok(None));
    }
}
