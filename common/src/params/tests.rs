use super::*;
use proptest::prelude::*;

fn cycle(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap_or_default()
}

fn err(r: Result<impl fmt::Debug>) -> String {
    r.err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn substitutes_bizdate_and_cyctime() -> Result<()> {
    let ctx = ParamContext::for_bizdate(parse_bizdate("2026-11-24")?);
    let s = substitute("dt='${bizdate}' and t<'${cyctime}'", &ctx)?;
    assert_eq!(s, "dt='20261124' and t<'20261125000000'");
    Ok(())
}

#[test]
fn unknown_parameter_is_an_error() {
    let err = check("where dt = '${bizdat}'").err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(
            "unknown parameter ${bizdat} in the job; known: ${bizdate}, ${cyctime}; define \
             others as name=expression, e.g. dt=$[yyyymmdd-1]"
        )
    );
}

#[test]
fn bizdate_forms() {
    assert!(parse_bizdate("20261124").is_ok());
    assert!(parse_bizdate("2026-11-24").is_ok());
    assert!(parse_bizdate("2026-13-01").is_err());
    assert!(parse_bizdate("yesterday").is_err());
}

#[test]
fn time_expressions_are_computed_from_the_cycle_time() -> Result<()> {
    let ctx = ParamContext::for_cycle(cycle("2026-11-25 02:30:00"));
    assert_eq!(
        ctx.bizdate,
        NaiveDate::from_ymd_opt(2026, 11, 24).unwrap_or_default()
    );
    let cases = [
        ("${bizdate}", "20261124"),
        ("${cyctime}", "20261125023000"),
        ("$[yyyymmdd]", "20261125"),
        ("$[yyyymmdd-1]", "20261124"),
        ("$[yyyymmdd+1]", "20261126"),
        ("$[yyyy-mm-dd]", "2026-11-25"),
        ("$[hh24miss]", "023000"),
        ("$[hh24miss-1/24]", "013000"),
        ("$[yyyymmddhh24miss-3/24]", "20261124233000"),
        ("$[add_months(yyyymmdd,-1)]", "20261025"),
        ("$[yyyymm]", "202611"),
    ];
    for (text, want) in cases {
        assert_eq!(substitute(text, &ctx)?, want, "{text}");
        check(text)?;
    }
    Ok(())
}

#[test]
fn manual_run_cycle_is_the_day_after_the_bizdate() -> Result<()> {
    let ctx = ParamContext::for_bizdate(parse_bizdate("20261124")?);
    assert_eq!(
        substitute("$[yyyymmdd] $[yyyymmdd-1]", &ctx)?,
        "20261125 20261124"
    );
    Ok(())
}

#[test]
fn user_parameters_dataworks_style() -> Result<()> {
    let defs = ParamDefs::parse(
        "dt=$[yyyymmdd-1] region=cn month=$[yyyymm]\n bd=$bizdate ct=$cyctime \
         biz=${yyyymmdd} prev=${yyyy-mm-dd-1} file=log_$[yyyymmdd]_${bizdate}.csv \
         stamp=$[yyyy-mm-dd hh24:mi:ss] title=\"daily load\" price=$5 empty=",
    )?;
    let names: Vec<&str> = defs.names().collect();
    assert_eq!(
        names,
        [
            "dt", "region", "month", "bd", "ct", "biz", "prev", "file", "stamp", "title", "price",
            "empty"
        ]
    );
    let resolved = resolve(
        &defs,
        &ParamContext::for_cycle(cycle("2026-11-25 02:30:00")),
    )?;
    let get = |n: &str| resolved.get(n).unwrap_or("<missing>").to_string();
    assert_eq!(get("dt"), "20261124");
    assert_eq!(get("region"), "cn");
    assert_eq!(get("month"), "202611");
    assert_eq!(get("bd"), "20261124");
    assert_eq!(get("ct"), "20261125023000");
    assert_eq!(get("biz"), "20261124");
    assert_eq!(get("prev"), "2026-11-23");
    assert_eq!(get("file"), "log_20261125_20261124.csv");
    assert_eq!(get("stamp"), "2026-11-25 02:30:00");
    assert_eq!(get("title"), "daily load");
    assert_eq!(get("price"), "$5");
    assert_eq!(get("empty"), "");
    assert_eq!(get("bizdate"), "20261124");

    let text = "select * from t_${region} where dt='${dt}' and m='$[yyyymm]' -- ${title}";
    check_with(text, &defs)?;
    assert_eq!(
        substitute(text, &resolved)?,
        "select * from t_cn where dt='20261124' and m='202611' -- daily load"
    );
    // The definitions read back from their text form.
    assert_eq!(ParamDefs::parse(&defs.to_string())?, defs);
    Ok(())
}

#[test]
fn unknown_name_lists_the_known_ones() -> Result<()> {
    let defs = ParamDefs::parse("dt=$[yyyymmdd-1] region=cn")?;
    let msg = err(check_with("where dt='${date}'", &defs));
    assert!(
        msg.contains("${date}") && msg.contains("known: ${bizdate}, ${cyctime}, ${dt}, ${region}"),
        "{msg}"
    );
    let resolved = resolve(
        &defs,
        &ParamContext::for_cycle(cycle("2026-11-25 00:00:00")),
    )?;
    let msg = err(substitute("${date}", &resolved));
    assert!(
        msg.contains("known: ${bizdate}, ${cyctime}, ${dt}, ${region}"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn bad_definitions_are_refused_with_the_reason() {
    for (text, want) in [
        ("1x=3", "a name is a letter"),
        ("bizdate=20260101", "built in"),
        ("dt=1 dt=2", "defined twice"),
        ("region", "expected name=expression"),
        ("x=$foo", "unknown $foo"),
        ("x=${hh24}", "no time of day"),
        ("x=${region}", "bizdate, cyctime or a date"),
        ("x=$[yyyymmdd-x]", "unknown piece"),
        ("title=\"open", "not closed"),
        ("x=$[yyyymmdd", "not closed"),
    ] {
        let msg = err(ParamDefs::parse(text));
        assert!(msg.contains(want), "{text}: {msg}");
        assert!(
            msg.contains("e.g. dt=$[yyyymmdd-1]"),
            "{text}: shows an example: {msg}"
        );
    }
}

#[test]
fn bad_time_expression_in_the_text_is_refused_at_check() {
    let msg = err(check("dt=$[yyyymmddd]"));
    assert!(
        msg.contains("$[yyyymmddd]") && msg.contains("unknown piece"),
        "{msg}"
    );
}

#[test]
fn text_without_references_is_untouched() -> Result<()> {
    let ctx = ParamContext::for_cycle(cycle("2026-11-25 00:00:00"));
    for text in [
        "",
        "plain",
        "cost $5",
        "a $ b",
        "json {\"a\": [1]}",
        "${unclosed",
    ] {
        assert_eq!(substitute(text, &ctx)?, text);
    }
    Ok(())
}

#[test]
fn resolved_values_are_stored_and_reused_as_they_were() -> Result<()> {
    let defs = ParamDefs::parse("dt=$[yyyymmdd-1]")?;
    let resolved = resolve(
        &defs,
        &ParamContext::for_cycle(cycle("2026-11-25 02:30:00")),
    )?;
    let stored = serde_json::to_string(&resolved).map_err(|e| Error::InvalidJob {
        path: String::new(),
        message: e.to_string(),
    })?;
    let back: ResolvedParams = serde_json::from_str(&stored).map_err(|e| Error::InvalidJob {
        path: String::new(),
        message: e.to_string(),
    })?;
    assert_eq!(back, resolved);
    assert_eq!(substitute("${dt} $[hh24]", &back)?, "20261124 02");
    Ok(())
}

#[test]
fn shell_tasks_get_prefixed_environment_variables() -> Result<()> {
    let defs = ParamDefs::parse("PATH=/tmp region=cn")?;
    let resolved = resolve(
        &defs,
        &ParamContext::for_bizdate(parse_bizdate("20261124")?),
    )?;
    let env = resolved.env_vars();
    assert_eq!(
        env.get("FERRY_PARAM_bizdate").map(String::as_str),
        Some("20261124")
    );
    assert_eq!(
        env.get("FERRY_PARAM_cyctime").map(String::as_str),
        Some("20261125000000")
    );
    assert_eq!(
        env.get("FERRY_PARAM_region").map(String::as_str),
        Some("cn")
    );
    assert_eq!(
        env.get("FERRY_PARAM_PATH").map(String::as_str),
        Some("/tmp")
    );
    assert!(!env.contains_key("PATH"));
    Ok(())
}

proptest! {
    /// The hand-written formats are chrono's, over every year chrono can hold.
    #[test]
    fn date_and_time_formats_are_chronos(
        days in -3_000_000i64..3_000_000, secs in 0i64..86_400,
    ) {
        let base = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default().and_time(NaiveTime::MIN);
        let t = base + chrono::Duration::days(days) + chrono::Duration::seconds(secs);
        prop_assert_eq!(yyyymmdd(t.date()), t.date().format("%Y%m%d").to_string());
        prop_assert_eq!(yyyymmddhhmmss(t), t.format("%Y%m%d%H%M%S").to_string());
    }

    #[test]
    fn bizdate_is_the_day_before_the_cycle_date(
        days in 0i64..40_000, secs in 0i64..86_400, hours in 0i64..48,
    ) {
        let base = NaiveDate::from_ymd_opt(1950, 1, 1).unwrap_or_default().and_time(NaiveTime::MIN);
        let cyctime = base + chrono::Duration::days(days) + chrono::Duration::seconds(secs);
        let ctx = ParamContext::for_cycle(cyctime);
        let defs = ParamDefs::parse("a=${yyyymmdd} b=$bizdate").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let r = resolve(&defs, &ctx).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let text = format!("${{bizdate}} $[yyyymmdd-1] ${{a}} ${{b}} $[yyyymmddhh24miss-{hours}/24]");
        let out = substitute(&text, &r).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let bizdate = (cyctime.date() - chrono::Duration::days(1)).format("%Y%m%d").to_string();
        let shifted = (cyctime - chrono::Duration::hours(hours)).format("%Y%m%d%H%M%S").to_string();
        prop_assert_eq!(out, format!("{bizdate} {bizdate} {bizdate} {bizdate} {shifted}"));
    }
}
