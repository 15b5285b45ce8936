//! Wording shared by many messages.

pub(super) fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

pub(super) fn shape_str(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

pub(super) fn list_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.into_iter().collect();
    const MAX: usize = 12;
    if v.len() > MAX {
        format!(
            "{}, … ({} in all)",
            v.iter().take(MAX).copied().collect::<Vec<_>>().join(", "),
            v.len()
        )
    } else {
        v.join(", ")
    }
}

pub(super) fn fmt_f(x: f64) -> String {
    format!("{x}")
}
