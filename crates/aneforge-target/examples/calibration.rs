//! Prints the estimator's calibration table: projected vs published latency
//! for every published point, marking the points the fit never saw.
//!
//! `cargo run -p aneforge-target --example calibration` prints the table with
//! the shipped constants; add `-- --refit` to refit them first and print the
//! refitted constants and table too.

use aneforge_target::calibration::{
    calibration_report_with, fit, fitted_knobs, leave_one_out_report,
};
use aneforge_target::{calibration_report, format_report, EstimatorParams};

fn main() {
    let rows = match calibration_report() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("calibration failed: {e}");
            std::process::exit(1);
        }
    };
    println!("shipped constants: {:?}\n", EstimatorParams::calibrated());
    print!("{}", format_report(&rows));
    let worst = rows.iter().map(|r| r.error_pct.abs()).fold(0.0, f64::max);
    println!("worst |error|: {worst:.1}% (goal: 30%)");

    match leave_one_out_report() {
        Ok(rows) => {
            println!("\nleave-one-out: each fitted point predicted by a fit made without it");
            print!("{}", format_report(&rows));
        }
        Err(e) => eprintln!("leave-one-out failed: {e}"),
    }

    if std::env::args().any(|a| a == "--refit") {
        let (p, loss) = fit(EstimatorParams::calibrated());
        println!("\nrefit of {:?}: loss {loss:.5}\n{p:?}\n", fitted_knobs());
        match calibration_report_with(&p) {
            Ok(rows) => print!("{}", format_report(&rows)),
            Err(e) => eprintln!("calibration failed: {e}"),
        }
    }
}
