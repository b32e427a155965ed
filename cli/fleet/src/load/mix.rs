//! The workload: which operations, in what proportion, over which keys.
//!
//! Requests are drawn from a seeded generator, so the same `--seed` sends
//! the same sequence. Title reads follow a Zipf-like skew (rank 1 is
//! `t00001`), as real catalogues do; users, genres and written values are
//! uniform.

use fleet_seed::SplitMix64;

/// The service a run targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Service {
    /// The edge's JSON API.
    Edge,
    /// catalog over gRPC.
    Catalog,
    /// ratings over gRPC.
    Ratings,
    /// dal over gRPC.
    Dal,
}

impl Service {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::Catalog => "catalog",
            Self::Ratings => "ratings",
            Self::Dal => "dal",
        }
    }

    /// The operations it serves.
    pub fn ops(self) -> &'static [Op] {
        match self {
            Self::Edge => &[
                Op::Title,
                Op::Browse,
                Op::Home,
                Op::Rate,
                Op::Progress,
                Op::Ratings,
            ],
            Self::Catalog => &[Op::Title, Op::Browse, Op::Genres],
            Self::Ratings => &[Op::Rate, Op::Progress, Op::Ratings, Op::Continue, Op::Top],
            Self::Dal => &[Op::Title, Op::Browse, Op::Ratings],
        }
    }

    /// The mix used when `--mix` is not given.
    pub fn default_mix(self) -> &'static [(Op, u32)] {
        match self {
            Self::Edge => &[
                (Op::Title, 70),
                (Op::Browse, 10),
                (Op::Home, 10),
                (Op::Rate, 5),
                (Op::Progress, 5),
            ],
            Self::Catalog => &[(Op::Title, 90), (Op::Browse, 10)],
            Self::Ratings => &[(Op::Rate, 40), (Op::Progress, 40), (Op::Ratings, 20)],
            Self::Dal => &[(Op::Title, 80), (Op::Browse, 10), (Op::Ratings, 10)],
        }
    }
}

/// One kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read one title (Zipf keys).
    Title,
    /// A browse page of one genre.
    Browse,
    /// A user's home page (edge fan-out).
    Home,
    /// A rating write.
    Rate,
    /// A viewing-progress write.
    Progress,
    /// A user's ratings.
    Ratings,
    /// A user's continue-watching row (ratings service).
    Continue,
    /// The genre list (catalog service).
    Genres,
    /// Top-rated titles (ratings service).
    Top,
}

impl Op {
    const ALL: [Op; 9] = [
        Op::Title,
        Op::Browse,
        Op::Home,
        Op::Rate,
        Op::Progress,
        Op::Ratings,
        Op::Continue,
        Op::Genres,
        Op::Top,
    ];

    /// Its name in `--mix`, reports and interval-log tags.
    pub fn name(self) -> &'static str {
        match self {
            Self::Title => "title",
            Self::Browse => "browse",
            Self::Home => "home",
            Self::Rate => "rate",
            Self::Progress => "progress",
            Self::Ratings => "ratings",
            Self::Continue => "continue",
            Self::Genres => "genres",
            Self::Top => "top",
        }
    }

    /// The operation called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// Operations and their weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    entries: Vec<(Op, u32)>,
    total: u64,
}

impl Mix {
    /// Parses `title=70,browse=10` or `title` for `service`; `None` is the
    /// service's default mix.
    ///
    /// # Errors
    /// A message for an unknown or unserved operation, a bad or zero
    /// weight, or an operation listed twice.
    pub fn parse(text: Option<&str>, service: Service) -> Result<Self, String> {
        let Some(text) = text else {
            return Self::new(service.default_mix().to_vec());
        };
        let mut entries: Vec<(Op, u32)> = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                return Err("empty item (expected op=weight,op=weight)".into());
            }
            let (name, weight) = match item.split_once('=') {
                Some((n, w)) => {
                    let w: u32 = w
                        .trim()
                        .parse()
                        .map_err(|_| format!("weight {w:?} of {n:?} is not a whole number"))?;
                    (n.trim(), w)
                }
                None => (item, 1),
            };
            let op = Op::from_name(name).ok_or_else(|| {
                format!(
                    "unknown operation {name:?}; {} offers: {}",
                    service.name(),
                    names(service.ops())
                )
            })?;
            if !service.ops().contains(&op) {
                return Err(format!(
                    "operation {name:?} is not served by {}; it offers: {}",
                    service.name(),
                    names(service.ops())
                ));
            }
            if weight == 0 || weight > 1_000_000 {
                return Err(format!("weight of {name:?} must be 1..=1000000"));
            }
            if entries.iter().any(|(o, _)| *o == op) {
                return Err(format!("operation {name:?} listed twice"));
            }
            entries.push((op, weight));
        }
        Self::new(entries)
    }

    fn new(entries: Vec<(Op, u32)>) -> Result<Self, String> {
        let total = entries.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Err("no operations".into());
        }
        Ok(Self { entries, total })
    }

    /// For a gRPC target without `--service`: the one service that serves
    /// every operation of `mix`.
    ///
    /// # Errors
    /// A message when no mix is given or the operations fit no single
    /// service, or several (`title` is both catalog's and the dal's).
    pub fn infer_service(mix: Option<&str>) -> Result<Service, String> {
        let Some(mix) = mix else {
            return Err(
                "a grpc:// target needs --service (catalog, ratings, dal) or a --mix that names it"
                    .into(),
            );
        };
        let ops: Vec<Op> = mix
            .split(',')
            .filter_map(|i| Op::from_name(i.split('=').next().unwrap_or_default().trim()))
            .collect();
        let fits: Vec<Service> = [Service::Catalog, Service::Ratings, Service::Dal]
            .into_iter()
            .filter(|s| !ops.is_empty() && ops.iter().all(|op| s.ops().contains(op)))
            .collect();
        match fits.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!(
                "no single gRPC service serves --mix {mix:?}; give --service"
            )),
            many => Err(format!(
                "--mix {mix:?} fits {}; give --service",
                many.iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )),
        }
    }

    /// The operations, in `--mix` order, with their weights.
    pub fn ops(&self) -> &[(Op, u32)] {
        &self.entries
    }

    /// The share of `op` in percent.
    pub fn percent(&self, index: usize) -> f64 {
        self.entries
            .get(index)
            .map_or(0.0, |(_, w)| f64::from(*w) * 100.0 / self.total as f64)
    }

    /// Draws an operation's index.
    fn pick(&self, rng: &mut SplitMix64) -> usize {
        let mut x = rng.below(self.total);
        for (i, (_, w)) in self.entries.iter().enumerate() {
            let w = u64::from(*w);
            if x < w {
                return i;
            }
            x -= w;
        }
        0
    }
}

fn names(ops: &[Op]) -> String {
    ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
}

/// A Zipf-like distribution over ranks `1..=n`: P(k) ∝ 1/k^s.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Over `n` ranks with exponent `s` (0 = uniform).
    pub fn new(n: u32, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut acc = 0.0;
        for k in 1..=n.max(1) {
            acc += 1.0 / f64::from(k).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    /// A rank in `1..=n`.
    pub fn sample(&self, rng: &mut SplitMix64) -> u32 {
        let u = rng.unit();
        let i = self.cdf.partition_point(|c| *c <= u);
        u32::try_from(i.min(self.cdf.len().saturating_sub(1))).unwrap_or(0) + 1
    }
}

/// One request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Index of its operation in the mix.
    pub op_index: usize,
    /// The operation.
    pub op: Op,
    /// A title id (Zipf).
    pub title: String,
    /// A user id.
    pub user: String,
    /// A genre.
    pub genre: &'static str,
    /// Stars, for a rating.
    pub stars: u32,
    /// Seconds watched, for progress.
    pub position_s: u32,
}

/// Draws requests.
#[derive(Clone, Debug)]
pub struct Workload {
    mix: Mix,
    zipf: Zipf,
    users: u32,
    rng: SplitMix64,
}

impl Workload {
    /// A generator over `mix`, `titles` titles with Zipf exponent `s`,
    /// `users` users, seeded with `seed`.
    pub fn new(mix: Mix, titles: u32, s: f64, users: u32, seed: u64) -> Self {
        Self {
            mix,
            zipf: Zipf::new(titles, s),
            users: users.max(1),
            rng: SplitMix64::new(seed),
        }
    }

    /// The mix.
    pub fn mix(&self) -> &Mix {
        &self.mix
    }

    /// The next request.
    pub fn next_request(&mut self) -> Request {
        let op_index = self.mix.pick(&mut self.rng);
        let op = self
            .mix
            .entries
            .get(op_index)
            .map_or(Op::Title, |(op, _)| *op);
        let title = fleet_seed::title_id(self.zipf.sample(&mut self.rng));
        let user = fleet_seed::user_id(
            u32::try_from(self.rng.below(u64::from(self.users))).unwrap_or(0) + 1,
        );
        let genres = fleet_seed::GENRES;
        let genre = genres
            .get(self.rng.below(genres.len() as u64) as usize)
            .copied()
            .unwrap_or("drama");
        let stars = u32::try_from(self.rng.below(5)).unwrap_or(0) + 1;
        let position_s = u32::try_from(self.rng.below(7200)).unwrap_or(0);
        Request {
            op_index,
            op,
            title,
            user,
            genre,
            stars,
            position_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_with_weights_or_as_one_operation() {
        let m = Mix::parse(Some("title=80, browse=20"), Service::Edge).unwrap();
        assert_eq!(m.ops(), &[(Op::Title, 80), (Op::Browse, 20)]);
        assert_eq!(m.percent(1), 20.0);
        let m = Mix::parse(Some("title"), Service::Catalog).unwrap();
        assert_eq!(m.ops(), &[(Op::Title, 1)]);
        let m = Mix::parse(None, Service::Edge).unwrap();
        assert_eq!(m.ops().len(), 5);
    }

    #[test]
    fn bad_mixes_are_refused_with_a_reason() {
        for (bad, why) in [
            ("title=0", "must be"),
            ("title=x", "whole number"),
            ("bogus=3", "unknown operation"),
            ("home", "not served by catalog"),
            ("title,title", "twice"),
            ("title,,browse", "empty item"),
        ] {
            let e = Mix::parse(Some(bad), Service::Catalog).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_service_is_inferred_only_when_unambiguous() {
        assert_eq!(Mix::infer_service(Some("rate=1")), Ok(Service::Ratings));
        assert_eq!(Mix::infer_service(Some("genres")), Ok(Service::Catalog));
        assert!(Mix::infer_service(Some("title")).is_err()); // catalog or dal
        assert!(Mix::infer_service(Some("home")).is_err()); // edge only
        assert!(Mix::infer_service(None).is_err());
    }

    #[test]
    fn zipf_skews_towards_low_ranks_and_stays_in_range() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = SplitMix64::new(7);
        let mut top10 = 0;
        for _ in 0..10_000 {
            let k = z.sample(&mut rng);
            assert!((1..=1000).contains(&k));
            if k <= 10 {
                top10 += 1;
            }
        }
        // With s = 1 over 1000 keys, the top 1 % of keys gets ~39 % of reads.
        assert!(top10 > 3000, "{top10}");
        let uniform = Zipf::new(1000, 0.0);
        let top10 = (0..10_000)
            .filter(|_| uniform.sample(&mut rng) <= 10)
            .count();
        assert!(top10 < 300, "{top10}");
    }

    #[test]
    fn the_same_seed_draws_the_same_requests() {
        let mix = Mix::parse(None, Service::Edge).unwrap();
        let mut a = Workload::new(mix.clone(), 1000, 1.0, 500, 42);
        let mut b = Workload::new(mix, 1000, 1.0, 500, 42);
        for _ in 0..100 {
            assert_eq!(a.next_request(), b.next_request());
        }
    }
}
