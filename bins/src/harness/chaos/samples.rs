//! Samples of the banks during a chaos run, for the report: the total money
//! their accounts hold and how many transactions each holds in doubt, read
//! every [`SAMPLE_INTERVAL`] through the banks' own `GetAccount` and
//! `ListInDoubt`. A bank that is down or paused is left out of that sample
//! (and the total with it). At most [`SAMPLES_MAX`] samples are kept: when
//! full, every other one is dropped and the interval doubles.
//!
//! It checks nothing: the invariants are checked after healing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use minipay_proto::v1 as proto;
use tonic::transport::{Channel, Endpoint};

use crate::rpc::tls::TlsDir;

pub const SAMPLES_MAX: usize = 2_048;
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// A bank that has not answered within this is left out of the sample.
const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// The banks at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub time: f64,
    /// Every account's balance summed, when every bank answered.
    pub total: Option<u128>,
    /// Transactions in doubt, per bank that answered.
    pub in_doubt: BTreeMap<String, usize>,
}

/// One bank to sample: its name, its address and its accounts.
pub struct SampledBank {
    pub name: String,
    pub address: SocketAddr,
    pub accounts: Vec<String>,
}

/// Samples `banks` until `stop` is set; returns the samples kept, timed
/// from `started`.
pub async fn run(
    banks: Vec<SampledBank>,
    tls_dir: PathBuf,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Sample>> {
    let tls = TlsDir::new(&tls_dir);
    let mut clients = Vec::new();
    for bank in &banks {
        let channel = Endpoint::from_shared(format!("https://{}", bank.address))?
            .tls_config(tls.client("gateway")?)?
            .connect_timeout(READ_TIMEOUT)
            .connect_lazy();
        clients.push(proto::bank_client::BankClient::new(channel));
    }
    let mut samples = Vec::with_capacity(SAMPLES_MAX);
    let mut interval = SAMPLE_INTERVAL;
    while !stop.load(Ordering::SeqCst) {
        let time = started.elapsed().as_secs_f64();
        let mut total = Some(0u128);
        let mut in_doubt = BTreeMap::new();
        for (bank, client) in banks.iter().zip(&mut clients) {
            match read_bank(client, &bank.accounts).await {
                Some((sum, doubtful)) => {
                    total = total.map(|total| total + sum);
                    in_doubt.insert(bank.name.clone(), doubtful);
                }
                None => total = None,
            }
        }
        if samples.len() == SAMPLES_MAX {
            thin(&mut samples);
            interval *= 2;
        }
        samples.push(Sample {
            time,
            total,
            in_doubt,
        });
        assert!(samples.len() <= SAMPLES_MAX);
        tokio::time::sleep(interval).await;
    }
    Ok(samples)
}

/// Keeps every other sample.
fn thin(samples: &mut Vec<Sample>) {
    let mut index = 0;
    samples.retain(|_| {
        index += 1;
        index % 2 == 1
    });
}

/// The sum of `accounts`' balances and the count in doubt, or `None` if the
/// bank did not answer every read in time.
async fn read_bank(
    client: &mut proto::bank_client::BankClient<Channel>,
    accounts: &[String],
) -> Option<(u128, usize)> {
    let mut sum = 0u128;
    for account in accounts {
        let request = proto::GetAccountRequest {
            account_no: account.clone(),
        };
        let answer = tokio::time::timeout(READ_TIMEOUT, client.get_account(request))
            .await
            .ok()?
            .ok()?;
        sum += u128::from(answer.into_inner().balance);
    }
    let listed = tokio::time::timeout(
        READ_TIMEOUT,
        client.list_in_doubt(proto::ListInDoubtRequest {}),
    )
    .await
    .ok()?
    .ok()?;
    Some((sum, listed.into_inner().txns.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_every_other_sample_from_the_first() {
        let mut samples: Vec<Sample> = (0..6)
            .map(|second| Sample {
                time: f64::from(second),
                total: None,
                in_doubt: BTreeMap::new(),
            })
            .collect();
        thin(&mut samples);
        let times: Vec<f64> = samples.iter().map(|sample| sample.time).collect();
        assert_eq!(times, [0.0, 2.0, 4.0]);
    }
}
