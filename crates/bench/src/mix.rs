//! The saga paths the bench drives and how often each: what order to place for a path, and
//! which terminal event and reason it must end with.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Value, json};

/// The product every path but "out of stock" orders; stocked far beyond any run.
pub const STOCKED_SKU: &str = "BENCH-STOCKED";
/// A product with nothing on hand: ordering it is rejected.
pub const EMPTY_SKU: &str = "BENCH-EMPTY";
/// The stock given to [`STOCKED_SKU`].
pub const STOCK: i64 = 1_000_000_000;
/// The gateway simulator declines this payment token.
const DECLINED_TOKEN: &str = "tok_decline";
/// Fulfillment does not ship to this country.
const UNSERVED_COUNTRY: &str = "AQ";

/// One saga path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    Happy,
    Declined,
    OutOfStock,
    CannotShip,
}

impl Path {
    pub const ALL: [Path; 4] = [
        Path::Happy,
        Path::Declined,
        Path::OutOfStock,
        Path::CannotShip,
    ];

    /// The `POST /orders` body that takes this path; `n` varies the customer.
    pub fn request(self, n: u64) -> Value {
        let (sku, payment_method, country) = match self {
            Path::Happy => (STOCKED_SKU, "tok_ok", "NL"),
            Path::Declined => (STOCKED_SKU, DECLINED_TOKEN, "NL"),
            Path::OutOfStock => (EMPTY_SKU, "tok_ok", "NL"),
            Path::CannotShip => (STOCKED_SKU, "tok_ok", UNSERVED_COUNTRY),
        };
        json!({
            "customer_id": format!("bench-{}", n % 1000),
            "email": format!("bench-{}@example.com", n % 1000),
            "items": [{"sku": sku, "quantity": 1}],
            "payment_method": payment_method,
            "shipping": {"country": country, "address": "Damrak 1, Amsterdam"},
        })
    }

    /// The terminal event type and reason this path ends with.
    pub fn expected_end(self) -> (&'static str, Option<&'static str>) {
        match self {
            Path::Happy => ("order.completed", None),
            Path::Declined => ("order.cancelled", Some("payment_declined")),
            Path::OutOfStock => ("order.rejected", Some("out_of_stock")),
            Path::CannotShip => ("order.cancelled", Some("fulfillment_failed")),
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Happy => "happy",
            Path::Declined => "declined",
            Path::OutOfStock => "out_of_stock",
            Path::CannotShip => "cannot_ship",
        })
    }
}

/// Percentages of happy, declined, out-of-stock and cannot-ship orders, e.g. `80,10,5,5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mix {
    pub happy: u32,
    pub declined: u32,
    pub out_of_stock: u32,
    pub cannot_ship: u32,
}

impl Default for Mix {
    fn default() -> Mix {
        Mix {
            happy: 80,
            declined: 10,
            out_of_stock: 5,
            cannot_ship: 5,
        }
    }
}

impl Mix {
    /// The path of the `n`th order: a fixed interleaving in blocks of 100, so any window of
    /// the run has the mix (no randomness to make two runs differ).
    pub fn path_of(&self, n: u64) -> Path {
        // Spread each path over the block rather than in runs: n * 37 mod 100 visits every
        // slot of the block once (37 and 100 are coprime).
        let slot = (n.wrapping_mul(37) % 100) as u32;
        if slot < self.happy {
            Path::Happy
        } else if slot < self.happy + self.declined {
            Path::Declined
        } else if slot < self.happy + self.declined + self.out_of_stock {
            Path::OutOfStock
        } else {
            Path::CannotShip
        }
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        let parts: Result<Vec<u32>, _> = text.split(',').map(|p| p.trim().parse()).collect();
        match parts.as_deref() {
            Ok([happy, declined, out_of_stock, cannot_ship])
                if happy + declined + out_of_stock + cannot_ship == 100 =>
            {
                Ok(Mix {
                    happy: *happy,
                    declined: *declined,
                    out_of_stock: *out_of_stock,
                    cannot_ship: *cannot_ship,
                })
            }
            _ => Err(format!(
                "{text:?} is not four percentages adding up to 100 (happy, declined, out of \
                 stock, cannot ship), e.g. 80,10,5,5"
            )),
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.happy, self.declined, self.out_of_stock, self.cannot_ship
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_of_a_hundred_orders_has_the_mix() {
        let mix = Mix::default();
        for block in 0..3u64 {
            let mut counts = std::collections::BTreeMap::new();
            for n in block * 100..(block + 1) * 100 {
                *counts.entry(mix.path_of(n)).or_insert(0) += 1;
            }
            assert_eq!(
                counts,
                [
                    (Path::Happy, 80),
                    (Path::Declined, 10),
                    (Path::OutOfStock, 5),
                    (Path::CannotShip, 5)
                ]
                .into()
            );
        }
    }

    #[test]
    fn a_mix_is_parsed_or_refused_with_the_reason() {
        assert_eq!("80,10,5,5".parse::<Mix>(), Ok(Mix::default()));
        assert_eq!(
            "100,0,0,0".parse::<Mix>().map(|mix| mix.path_of(7)),
            Ok(Path::Happy)
        );
        assert!("80,10,5".parse::<Mix>().is_err());
        assert!("80,10,5,6".parse::<Mix>().is_err());
    }
}
