//! Prints the estimator's calibration table: projected vs published latency
//! for every published point, marking the points the fit never saw.
//!
//! `cargo run -p aneforge-target --example calibration` prints the table with
//! the shipped constants and the leave-one-out table; add `-- --refit` to
//! refit the constants and print them with their table, or
//! `-- --ops resnet50 "A16"` to print one model's per-op projection.

use aneforge_target::calibration::{
    calibration_report_with, fit, fitted_knobs, leave_one_out_report,
};
use aneforge_target::{calibration_report, format_report, EstimatorParams};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--ops") {
        let (Some(model), Some(chip)) = (args.get(i + 1), args.get(i + 2)) else {
            eprintln!("usage: calibration --ops <model> <chip or target>");
            std::process::exit(2);
        };
        let Some(program) = aneforge_target::calibration::model_ops(model) else {
            eprintln!(
                "unknown model {model:?}; known: {:?}",
                aneforge_target::calibration::MODELS
            );
            std::process::exit(2);
        };
        match aneforge_target::profile(chip) {
            Ok(t) => print!("{}", aneforge_target::estimate(&t, &program).report()),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
        return;
    }
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

    if args.iter().any(|a| a == "--refit") {
        let (p, loss) = fit(EstimatorParams::calibrated());
        println!("\nrefit of {:?}: loss {loss:.5}\n{p:?}\n", fitted_knobs());
        match calibration_report_with(&p) {
            Ok(rows) => print!("{}", format_report(&rows)),
            Err(e) => eprintln!("calibration failed: {e}"),
        }
    }
}
