//! The figures `fanout` prints when it measures a variant server against a
//! baseline in the same run (`--compare-rules`, `--metrics on,off`): means
//! over the rounds, their ratio, and each round's ratio of the two servers
//! measured next to each other.

use super::report::Json;

pub(super) fn number(r: &Json, key: &str) -> Option<f64> {
    r.get(key).and_then(Json::as_f64)
}

pub(super) fn deliveries_per_sec(r: &Json) -> Option<f64> {
    number(r, "deliveries_per_sec")
}

pub(super) fn server_cpu(r: &Json) -> Option<f64> {
    r.get("cpu")
        .and_then(|c| c.get("server_cpu_secs"))
        .and_then(Json::as_f64)
}

/// The mean of a figure over targets; `None` if any lacks it.
pub(super) fn mean(targets: &[&Json], figure: &dyn Fn(&Json) -> Option<f64>) -> Option<f64> {
    let values: Option<Vec<f64>> = targets.iter().map(|r| figure(r)).collect();
    values
        .filter(|v| !v.is_empty())
        .map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Per round: the variant's deliveries/s over the baseline's of the same
/// round, one per variant result.
pub(super) fn round_ratios(variant: &[&Json], baseline: &[&Json]) -> Vec<Option<f64>> {
    let round = |r: &Json| number(r, "round");
    variant
        .iter()
        .map(|v| {
            let partner = baseline.iter().find(|r| round(r) == round(v))?;
            ratio(deliveries_per_sec(v), deliveries_per_sec(partner))
        })
        .collect()
}

/// A figure to `digits` decimals, or `-` when there is none.
pub(super) fn show(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// `, means of N rounds`, or nothing for one round.
pub(super) fn rounds_note(rounds: usize) -> String {
    if rounds > 1 {
        format!(", means of {rounds} rounds")
    } else {
        String::new()
    }
}

/// `V vs B deliveries/s, ratio R (±P %)`, then each round's ratio when
/// there are several.
pub(super) fn rates_text(
    variant_rate: Option<f64>,
    baseline_rate: Option<f64>,
    rate_ratio: Option<f64>,
    round_ratios: &[Option<f64>],
) -> String {
    let per_round = if round_ratios.len() > 1 {
        let each: Vec<String> = round_ratios.iter().map(|r| show(*r, 3)).collect();
        format!(", per round {}", each.join(" "))
    } else {
        String::new()
    };
    format!(
        "{} vs {} deliveries/s, ratio {} ({}){per_round}",
        show(variant_rate, 0),
        show(baseline_rate, 0),
        show(rate_ratio, 3),
        rate_ratio.map_or_else(
            || "-".to_owned(),
            |r| format!("{:+.1} %", (r - 1.0) * 100.0)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_summary_reads_as_before() {
        assert_eq!(
            rates_text(Some(1000.0), Some(800.0), Some(1.25), &[Some(1.2), None]),
            "1000 vs 800 deliveries/s, ratio 1.250 (+25.0 %), per round 1.200 -"
        );
        assert_eq!(
            rates_text(None, Some(800.0), None, &[None]),
            "- vs 800 deliveries/s, ratio - (-)"
        );
        assert_eq!(rounds_note(1), "");
        assert_eq!(rounds_note(3), ", means of 3 rounds");
    }
}
