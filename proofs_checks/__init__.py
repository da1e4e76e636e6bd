"""proofs_checks: the verification suite of the Gaussian–masked duality (`mcd verify`).

Every claim of the duality is a registered check (`claims.all_claims()`) of injectable
implementations that default to the code the trainer uses (theory, duality, sampler); every
Monte Carlo check has planted bugs (`mutants.all_mutants()`) it must catch.  Statistics with
stated false-fail rates and detectable discrepancies live in `stats`; `suite.run_suite` runs
everything and `report.write_report` writes report.md, report.json and the plots.

    from proofs_checks.suite import run_suite
    from proofs_checks.report import write_report
    write_report(run_suite(seed=0, quick=True), "verify-report")
"""
