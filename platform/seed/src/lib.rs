//! Deterministic seed data, so a fresh system shows something real at once
//! and the load tool knows which ids exist.
//!
//! The same [`SeedConfig`] always yields the same titles, ratings and
//! progress, on every machine and with every version of every dependency:
//! the generator uses its own SplitMix64 rather than `rand`, whose stream is
//! not guaranteed stable across releases. Popularity is skewed (a few titles
//! get most ratings), so "top rated" and cache behaviour look like a real
//! catalogue rather than uniform noise.

#![forbid(unsafe_code)]

/// The genres of the catalogue.
pub const GENRES: [&str; 12] = [
    "action",
    "adventure",
    "animation",
    "comedy",
    "crime",
    "documentary",
    "drama",
    "fantasy",
    "horror",
    "romance",
    "sci-fi",
    "thriller",
];

/// Epoch (ms) the seed's timestamps count back from: 2026-01-01T00:00:00Z.
pub const SEED_EPOCH_MS: i64 = 1_767_225_600_000;

/// How much data to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedConfig {
    /// Number of titles (ids `t00001`…).
    pub titles: u32,
    /// Number of users (ids `u00001`…).
    pub users: u32,
    /// The random seed.
    pub seed: u64,
}

impl Default for SeedConfig {
    fn default() -> Self {
        Self {
            titles: 1_000,
            users: 500,
            seed: 0x00f1_ee75,
        }
    }
}

/// A seed title.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedTitle {
    /// Id, e.g. `t00042`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// One of [`GENRES`].
    pub genre: &'static str,
    /// Release year.
    pub year: u32,
    /// Runtime in minutes.
    pub runtime_min: u32,
    /// One-sentence synopsis.
    pub synopsis: String,
}

/// A seed rating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedRating {
    /// User id.
    pub user_id: String,
    /// Title id.
    pub title_id: String,
    /// 1..=5.
    pub stars: u32,
    /// When, ms since the Unix epoch.
    pub rated_at_ms: i64,
}

/// A seed viewing-progress entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedProgress {
    /// User id.
    pub user_id: String,
    /// Title id.
    pub title_id: String,
    /// Seconds watched.
    pub position_s: u32,
    /// When, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// The id of the `n`th title (1-based): `t00042`.
pub fn title_id(n: u32) -> String {
    format!("t{n:05}")
}

/// The id of the `n`th user (1-based): `u00042`.
pub fn user_id(n: u32) -> String {
    format!("u{n:05}")
}

/// SplitMix64: tiny, fast, and stable forever.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for seed data and never panics.
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const ADJECTIVES: [&str; 24] = [
    "Silent",
    "Crimson",
    "Last",
    "Hidden",
    "Broken",
    "Golden",
    "Electric",
    "Distant",
    "Frozen",
    "Wild",
    "Secret",
    "Endless",
    "Midnight",
    "Hollow",
    "Burning",
    "Lonely",
    "Iron",
    "Velvet",
    "Shattered",
    "Northern",
    "Quiet",
    "Restless",
    "Paper",
    "Glass",
];
const NOUNS: [&str; 24] = [
    "Harbor", "Kingdom", "Signal", "Orchard", "Horizon", "Witness", "Garden", "Protocol", "River",
    "Empire", "Lantern", "Station", "Summer", "Cipher", "Frontier", "Mirror", "Voyage", "Echo",
    "Citadel", "Meadow", "Archive", "Tide", "Compass", "Engine",
];
const PLOTS: [&str; 8] = [
    "An unlikely pair must cross {place} before the {thing} is lost for good.",
    "A retired {role} is pulled back for one last job in {place}.",
    "Secrets surface when a {role} returns to {place} after twenty years.",
    "In {place}, a young {role} discovers the {thing} that changes everything.",
    "A family coming apart in {place} finds an unexpected {thing}.",
    "The crew of a failing {thing} has one night to reach {place}.",
    "A {role} and a stranger trade lives for a season in {place}.",
    "Nobody in {place} believes the {role} — until the {thing} appears.",
];
const PLACES: [&str; 8] = [
    "a drowned city",
    "the northern coast",
    "a border town",
    "an orbital station",
    "the old quarter",
    "a mountain pass",
    "a failing resort",
    "the capital",
];
const ROLES: [&str; 8] = [
    "detective",
    "pilot",
    "cartographer",
    "chef",
    "smuggler",
    "teacher",
    "surgeon",
    "musician",
];
const THINGS: [&str; 8] = [
    "map",
    "signal",
    "ship",
    "letter",
    "machine",
    "song",
    "key",
    "recording",
];

fn pick<'a>(rng: &mut SplitMix64, from: &[&'a str]) -> &'a str {
    from.get(rng.below(from.len() as u64) as usize)
        .copied()
        .unwrap_or("")
}

/// All titles, in id order.
pub fn titles(cfg: &SeedConfig) -> Vec<SeedTitle> {
    let mut rng = SplitMix64::new(cfg.seed ^ 0x7171);
    (1..=cfg.titles)
        .map(|n| {
            let genre = GENRES
                .get(rng.below(GENRES.len() as u64) as usize)
                .copied()
                .unwrap_or("drama");
            let name = format!(
                "The {} {}",
                pick(&mut rng, &ADJECTIVES),
                pick(&mut rng, &NOUNS)
            );
            let name = if rng.below(4) == 0 {
                format!("{name} {}", 2 + rng.below(3))
            } else {
                name
            };
            let synopsis = pick(&mut rng, &PLOTS)
                .replace("{place}", pick(&mut rng, &PLACES))
                .replace("{role}", pick(&mut rng, &ROLES))
                .replace("{thing}", pick(&mut rng, &THINGS));
            let runtime_min = if genre == "animation" {
                70 + rng.below(40) as u32
            } else {
                75 + rng.below(100) as u32
            };
            SeedTitle {
                id: title_id(n),
                name,
                genre,
                year: 1950 + rng.below(77) as u32,
                runtime_min,
                synopsis,
            }
        })
        .collect()
}

/// A title index (0-based) drawn with a Zipf-like skew (s ≈ 1): low indices
/// are far more popular.
fn skewed_title(rng: &mut SplitMix64, titles: u32) -> u32 {
    // Inverse-CDF of a continuous 1/x distribution over [1, titles+1).
    let n = f64::from(titles.max(1));
    let x = (n + 1.0).powf(rng.unit());
    ((x as u32).saturating_sub(1)).min(titles.saturating_sub(1))
}

/// All ratings: each user rates 5–40 distinct titles, skewed towards
/// popular ones; each title has a hidden quality that biases its stars.
pub fn ratings(cfg: &SeedConfig) -> Vec<SeedRating> {
    let mut quality_rng = SplitMix64::new(cfg.seed ^ 0x9a11);
    let quality: Vec<f64> = (0..cfg.titles)
        .map(|_| 1.5 + 3.0 * quality_rng.unit())
        .collect();
    let mut rng = SplitMix64::new(cfg.seed ^ 0x5eed);
    let mut out = Vec::new();
    for u in 1..=cfg.users {
        let count = 5 + rng.below(36) as usize;
        let mut seen = std::collections::BTreeSet::new();
        let mut attempts = 0;
        while seen.len() < count.min(cfg.titles as usize) && attempts < count * 20 {
            attempts += 1;
            let t = skewed_title(&mut rng, cfg.titles);
            if !seen.insert(t) {
                continue;
            }
            let q = quality.get(t as usize).copied().unwrap_or(3.0);
            let noisy = q + (rng.unit() - 0.5) * 2.0;
            let stars = noisy.round().clamp(1.0, 5.0) as u32;
            out.push(SeedRating {
                user_id: user_id(u),
                title_id: title_id(t + 1),
                stars,
                rated_at_ms: SEED_EPOCH_MS - (rng.below(365 * 24 * 3600) as i64) * 1000,
            });
        }
    }
    out
}

/// All viewing progress: each user has 0–8 titles in progress.
pub fn progress(cfg: &SeedConfig) -> Vec<SeedProgress> {
    let all = titles(cfg);
    let mut rng = SplitMix64::new(cfg.seed ^ 0x9e09);
    let mut out = Vec::new();
    for u in 1..=cfg.users {
        let count = rng.below(9) as usize;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..count {
            let t = skewed_title(&mut rng, cfg.titles);
            if !seen.insert(t) {
                continue;
            }
            let runtime_s = all
                .get(t as usize)
                .map_or(5400, |title| title.runtime_min * 60);
            out.push(SeedProgress {
                user_id: user_id(u),
                title_id: title_id(t + 1),
                position_s: 60 + rng.below(u64::from(runtime_s.saturating_sub(120)).max(1)) as u32,
                updated_at_ms: SEED_EPOCH_MS - (rng.below(30 * 24 * 3600) as i64) * 1000,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_config_gives_the_same_data() {
        let cfg = SeedConfig::default();
        assert_eq!(titles(&cfg), titles(&cfg));
        assert_eq!(ratings(&cfg), ratings(&cfg));
        assert_eq!(progress(&cfg), progress(&cfg));
        let first = titles(&cfg).remove(0);
        assert_eq!(first.id, "t00001");
        // Pinned so an accidental change to the generator is noticed: ids
        // used in docs, tests and load profiles would silently change.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn data_is_shaped_like_a_catalogue() {
        let cfg = SeedConfig::default();
        let ts = titles(&cfg);
        assert_eq!(ts.len(), 1000);
        for g in GENRES {
            let n = ts.iter().filter(|t| t.genre == g).count();
            assert!(n > 40, "genre {g} has only {n} titles");
        }
        assert!(
            ts.iter()
                .all(|t| (1950..=2026).contains(&t.year) && t.runtime_min >= 70)
        );
        let rs = ratings(&cfg);
        assert!(rs.len() > 5_000, "{}", rs.len());
        assert!(rs.iter().all(|r| (1..=5).contains(&r.stars)));
        let popular = rs.iter().filter(|r| r.title_id == "t00001").count();
        let obscure = rs.iter().filter(|r| r.title_id == "t00900").count();
        assert!(popular > 5 * obscure.max(1), "skew: {popular} vs {obscure}");
        let mut pairs: Vec<_> = rs.iter().map(|r| (&r.user_id, &r.title_id)).collect();
        let n = pairs.len();
        pairs.sort();
        pairs.dedup();
        assert_eq!(pairs.len(), n, "one rating per user and title");
        let ps = progress(&cfg);
        assert!(!ps.is_empty());
        assert!(ps.iter().all(|p| p.position_s >= 60));
    }
}
