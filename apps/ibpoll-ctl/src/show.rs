//! The tables: the telemetry answers laid out like `ip link`, `ip maddr`, `ip neigh`
//! and `ethtool -S`.

use serde_json::Value;

/// Left-aligned columns, as wide as their widest cell.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table {
            rows: vec![head.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The lines (no trailing spaces).
    pub fn lines(&self) -> Vec<String> {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        self.rows
            .iter()
            .map(|r| {
                let mut line = String::new();
                for (c, cell) in r.iter().enumerate() {
                    if c > 0 {
                        line.push_str("  ");
                    }
                    line.push_str(cell);
                    if c + 1 < r.len() {
                        let pad = width[c] - cell.chars().count();
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
                line
            })
            .collect()
    }
}

/// A cell: strings as they are, numbers as numbers, null as `-`, lists joined by `|`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            if a.is_empty() {
                "-".to_owned()
            } else {
                a.iter().map(cell).collect::<Vec<_>>().join("|")
            }
        }
        other => other.to_string(),
    }
}

fn stacks(answer: &Value) -> &[Value] {
    answer["stacks"].as_array().map_or(&[], Vec::as_slice)
}

fn ifaces_of(stack: &Value) -> &[Value] {
    stack["ifaces"].as_array().map_or(&[], Vec::as_slice)
}

/// An interface whose control core did not answer: one row saying why.
fn error_row(t: &mut Table, stack: &Value, iface: &Value) -> bool {
    match iface["error"].as_str() {
        Some(e) => {
            t.row(vec![
                cell(&stack["stack"]),
                cell(&iface["iface"]),
                cell(&iface["pkey"]),
                format!("error: {e}"),
            ]);
            true
        }
        None => false,
    }
}

/// `ifaces`: one row per interface.
pub fn ifaces(answer: &Value) -> Vec<String> {
    let mut t = Table::new(&[
        "STACK", "IF", "PKEY", "DEVICE", "LID", "QPN", "LINK", "MTU", "IPV4", "GROUPS", "NEIGH",
        "HWADDR",
    ]);
    for s in stacks(answer) {
        for f in ifaces_of(s) {
            if error_row(&mut t, s, f) {
                continue;
            }
            let link = match f["flush"].as_str() {
                Some(l) => format!("{} (flush: {l})", cell(&f["link"])),
                None => cell(&f["link"]),
            };
            t.row(vec![
                cell(&s["stack"]),
                cell(&f["iface"]),
                cell(&f["pkey"]),
                format!("{} port {}", cell(&s["device"]), cell(&s["port"])),
                cell(&s["lid"]),
                cell(&f["qpn"]),
                link,
                cell(&f["mtu"]),
                cell(&f["ipv4"]),
                cell(&f["groups"]),
                cell(&f["neighbours"]),
                cell(&f["hwaddr"]),
            ]);
        }
    }
    t.lines()
}

/// `groups`: one row per multicast group (`ip maddr`, with the InfiniBand side).
pub fn groups(answer: &Value) -> Vec<String> {
    let mut t = Table::new(&[
        "STACK",
        "IF",
        "PKEY",
        "MGID",
        "IPV4",
        "KIND",
        "STATE",
        "JOINSTATE",
        "MLID",
        "QPN",
        "LANE",
        "QUEUED",
    ]);
    for s in stacks(answer) {
        for f in ifaces_of(s) {
            if error_row(&mut t, s, f) {
                continue;
            }
            for g in f["groups"].as_array().map_or(&[][..], Vec::as_slice) {
                let mut state = cell(&g["state"]);
                if g["failures"].as_u64().unwrap_or(0) > 0 {
                    state = format!("{state} ({} failed)", cell(&g["failures"]));
                }
                t.row(vec![
                    cell(&s["stack"]),
                    cell(&f["iface"]),
                    cell(&f["pkey"]),
                    cell(&g["mgid"]),
                    cell(&g["ipv4"]),
                    cell(&g["kind"]),
                    state,
                    cell(&g["join_state"]),
                    cell(&g["mlid"]),
                    cell(&g["qpn"]),
                    cell(&g["lane"]),
                    cell(&g["queued"]),
                ]);
            }
        }
    }
    t.lines()
}

/// `neigh`: one row per neighbour and its path (`ip neigh`).
pub fn neighbours(answer: &Value) -> Vec<String> {
    let mut t = Table::new(&[
        "STACK", "IF", "PKEY", "IP", "STATE", "DLID", "SL", "QPN", "QUEUED", "HWADDR",
    ]);
    for s in stacks(answer) {
        for f in ifaces_of(s) {
            if error_row(&mut t, s, f) {
                continue;
            }
            for n in f["neighbours"].as_array().map_or(&[][..], Vec::as_slice) {
                t.row(vec![
                    cell(&s["stack"]),
                    cell(&f["iface"]),
                    cell(&f["pkey"]),
                    cell(&n["ip"]),
                    cell(&n["state"]),
                    cell(&n["dlid"]),
                    cell(&n["sl"]),
                    cell(&n["qpn"]),
                    cell(&n["queued"]),
                    cell(&n["hwaddr"]),
                ]);
            }
        }
    }
    t.lines()
}

/// `name: value` lines of a counter object, indented (`ethtool -S`); zeros left out
/// unless `all`.
fn counters(out: &mut Vec<String>, obj: &Value, all: bool) {
    let Some(m) = obj.as_object() else { return };
    let width = m.keys().map(String::len).max().unwrap_or(0);
    for (k, v) in m {
        if all || v.as_u64() != Some(0) {
            out.push(format!("     {k:<width$}  {}", cell(v)));
        }
    }
}

/// `stats`: every lcore's and every controller's counters, then every drop by reason.
pub fn stats(answer: &Value, all: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut drops = Table::new(&["WHERE", "REASON", "PACKETS"]);
    let mut any_drop = false;
    let mut drop_rows = |place: String, obj: &Value| {
        for (k, v) in obj.as_object().into_iter().flatten() {
            if v.as_u64().unwrap_or(0) > 0 {
                drops.row(vec![place.clone(), k.clone(), cell(v)]);
                any_drop = true;
            }
        }
    };
    for s in stacks(answer) {
        let name = cell(&s["stack"]);
        for l in s["lcores"].as_array().map_or(&[][..], Vec::as_slice) {
            out.push(format!("{name} lcore {}:", cell(&l["lcore"])));
            counters(&mut out, &l["counters"], all);
            drop_rows(format!("{name} lcore {}", cell(&l["lcore"])), &l["drops"]);
        }
        for c in s["ctrl"].as_array().map_or(&[][..], Vec::as_slice) {
            let head = format!(
                "{name} ctrl iface {} (P_Key {})",
                cell(&c["iface"]),
                cell(&c["pkey"])
            );
            out.push(format!("{head}:"));
            match c["error"].as_str() {
                Some(e) => out.push(format!("     error: {e}")),
                None => {
                    counters(&mut out, &c["counters"], all);
                    drop_rows(
                        format!("{name} ctrl iface {}", cell(&c["iface"])),
                        &c["drops"],
                    );
                }
            }
        }
    }
    if !all {
        out.push("(counters at zero are not shown; --all shows them)".to_owned());
    }
    if any_drop {
        out.push("drops by reason:".to_owned());
        out.extend(drops.lines().into_iter().map(|l| format!("     {l}")));
    } else {
        out.push("drops by reason: none".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_line_up_and_lines_end_without_spaces() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        let l = t.lines();
        assert_eq!(l, ["A          LONGER", "wide cell  x"]);
    }

    #[test]
    fn groups_rows_carry_every_field_and_errors_say_why() {
        let a = json!({"stacks": [{"stack": "sink", "id": 2, "ifaces": [
            {"iface": 0, "pkey": "0x8002", "groups": [
                {"mgid": "ff12:401b:8002::1:1", "ipv4": "239.1.0.1", "kind": "full",
                 "state": "Joined", "join_state": ["FullMember"], "mlid": "0xc001",
                 "qpn": "0x000011", "lane": 0, "queued": 0, "failures": 0}]},
            {"iface": 1, "pkey": "0x8003", "error": "the control core has stopped"}]}]});
        let l = groups(&a);
        assert_eq!(l.len(), 3, "{l:?}");
        for want in [
            "sink",
            "ff12:401b:8002::1:1",
            "239.1.0.1",
            "Joined",
            "FullMember",
            "0xc001",
            "0x000011",
        ] {
            assert!(l[1].contains(want), "{want} not in {:?}", l[1]);
        }
        assert!(
            l[2].contains("error: the control core has stopped"),
            "{:?}",
            l[2]
        );
    }

    #[test]
    fn stats_hide_zeros_unless_asked_and_list_drops() {
        let a = json!({"stacks": [{"stack": "gen", "lcores": [
            {"lcore": 0, "counters": {"app_tx": 5, "tx_full": 2, "rx_packets": 0},
             "drops": {"tx_full": 2, "tx_link_down": 0}}], "ctrl": []}]});
        let l = stats(&a, false);
        assert!(l.iter().any(|x| x.trim() == "app_tx      5"), "{l:?}");
        assert!(!l.iter().any(|x| x.contains("rx_packets")), "{l:?}");
        let last = l.last().unwrap();
        assert!(
            last.contains("gen lcore 0") && last.contains("tx_full") && last.ends_with('2'),
            "{l:?}"
        );
        let all = stats(&a, true);
        assert!(all.iter().any(|x| x.contains("rx_packets")));
    }
}
