//! Serde helpers: durations as fractional milliseconds (exact to the nanosecond for
//! durations below about eleven days).

fn to_ms(d: &std::time::Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

fn from_ms(ms: f64) -> std::time::Duration {
    if ms.is_finite() && ms > 0.0 {
        std::time::Duration::from_nanos((ms * 1e6).round() as u64)
    } else {
        std::time::Duration::ZERO
    }
}

pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(super::to_ms(d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(super::from_ms(f64::deserialize(d)?))
    }
}

pub(crate) mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::to_ms(d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.map(super::from_ms))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_round_trip_exactly() {
        for nanos in [0, 1, 999, 1_552_575, 601_672_123, 86_400_000_000_123] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(super::from_ms(super::to_ms(&d)), d);
        }
    }
}
