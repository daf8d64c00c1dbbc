//! Puts each function's literal pool where GNU as can use it.
//!
//! LLVM's Xtensa backend emits a function's `.literal_position`/`.literal` group *before*
//! the `.section` directive that opens the function, so the literals land at the end of the
//! previous function's section, unaligned, and GNU ld refuses the L32R relocations
//! ("dangerous relocation: l32r: misaligned literal target"). Moving the group to just after
//! the last section directive before the function's first label puts the literals at the
//! head of the function's own section; `as --text-section-literals` then places them there.

/// Rewrites `asm` with every literal group moved into the section of the function it
/// belongs to. Everything else is kept line for line.
pub fn place_literals(asm: &str) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(asm.lines().count());
    let mut pending: Vec<&str> = Vec::new();
    // Where in `out` the pending group goes: just after the function's section directive,
    // or back where it was when no code section follows.
    let mut anchor: Option<usize> = None;
    let mut origin = 0;

    for line in asm.lines() {
        let text = line.trim();
        if text.starts_with(".literal_position") {
            flush(&mut out, &mut pending, anchor.take().unwrap_or(origin));
            origin = out.len();
            pending.push(line);
            continue;
        }
        if !pending.is_empty() {
            if text.starts_with(".literal ") || text.starts_with(".literal\t") {
                pending.push(line);
                continue;
            }
            if is_section_directive(text) {
                out.push(line);
                anchor = if is_code_section(text) { Some(out.len()) } else { None };
                continue;
            }
            if is_label(line) {
                flush(&mut out, &mut pending, anchor.take().unwrap_or(origin));
            }
        }
        out.push(line);
    }
    flush(&mut out, &mut pending, anchor.unwrap_or(origin));

    let mut fixed = out.join("\n");
    fixed.push('\n');
    fixed
}

/// Moves jump tables from DRAM to flash. `.rodata` must live in DRAM because code reads
/// constants byte by byte, but a jump table is only ever read with aligned 32-bit loads
/// (`l32i`), which IROM serves: every such table frees DRAM. A section qualifies when all it
/// ever holds are `.LJTI` labels and `.long` entries.
pub fn jump_tables_to_irom(asm: &str) -> String {
    use std::collections::HashMap;
    // First pass: which sections hold nothing but jump tables.
    let mut only_tables: HashMap<&str, bool> = HashMap::new();
    let mut current: Option<&str> = None;
    for line in asm.lines() {
        let text = line.trim();
        if is_section_directive(text) {
            current = section_name(text).filter(|name| name.starts_with(".rodata"));
            if let Some(name) = current {
                only_tables.entry(name).or_insert(true);
            }
            continue;
        }
        let Some(name) = current else { continue };
        let table_line = text.is_empty()
            || text.starts_with(".p2align")
            || (text.starts_with(".LJTI") && text.ends_with(':'))
            || text.starts_with(".long\t.LBB")
            || text.starts_with(".long .LBB");
        if !table_line {
            only_tables.insert(name, false);
        }
    }
    // Second pass: rename those sections into IROM.
    let mut out = String::with_capacity(asm.len());
    for line in asm.lines() {
        let text = line.trim();
        match section_name(text) {
            Some(name) if is_section_directive(text) && only_tables.get(name) == Some(&true) => {
                let renamed = format!(".irom0.text.jump_tables{}", &name[".rodata".len()..]);
                out.push_str(&line.replacen(name, &renamed, 1));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Calls through `call0` where LLVM loads the callee from a literal: `l32r aN, .L; callx0
/// aN` (10 bytes with the literal) becomes `call0 sym` (3 bytes), and literals nothing
/// refers to any more are dropped. Only for code whose calls all lie within `call0`'s
/// reach (+-512 KB): a bootloader, all of it in 8 KB of RAM. (A firmware's IROM code
/// calls IRAM code a megabyte away.) A literal holding a number (a ROM routine's address)
/// stays a `callx0`; a call the linker still cannot reach fails the link, never silently.
pub fn direct_calls(asm: &str) -> String {
    use std::collections::HashMap;
    let symbols: HashMap<&str, &str> = asm
        .lines()
        .filter_map(|line| literal(line.trim()))
        .filter(|(_, value)| value.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '.'))
        .collect();

    let lines: Vec<&str> = asm.lines().collect();
    let mut calls: Vec<String> = Vec::with_capacity(lines.len());
    // Indices of `callx0` lines to turn into `call0 target`, and of the loads they replace.
    let mut direct: HashMap<usize, &str> = HashMap::new();
    let mut dropped = vec![false; lines.len()];
    for (at, line) in lines.iter().enumerate() {
        let Some(operands) = line.trim().strip_prefix("l32r") else { continue };
        let Some((register, label)) = operands.trim().split_once(',') else { continue };
        let Some(target) = symbols.get(label.trim()) else { continue };
        if let Some(call) = call_using(&lines[at + 1..], register.trim()) {
            direct.insert(at + 1 + call, target);
            dropped[at] = true;
        }
    }
    for (at, line) in lines.iter().enumerate() {
        match direct.get(&at) {
            Some(target) => calls.push(format!("\tcall0\t{target}")),
            None if dropped[at] => {}
            None => calls.push(line.to_string()),
        }
    }

    // Drop the literals no instruction uses now.
    let words = |line: &str| -> Vec<String> {
        line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$'))
            .filter(|word| word.starts_with(".L"))
            .map(str::to_string)
            .collect()
    };
    let mut used: HashMap<String, usize> = HashMap::new();
    for line in calls.iter().filter(|line| literal(line.trim()).is_none()) {
        for word in words(line) {
            *used.entry(word).or_default() += 1;
        }
    }
    let mut out = String::with_capacity(asm.len());
    for line in &calls {
        if let Some((label, _)) = literal(line.trim())
            && !used.contains_key(label)
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Where in `after` (the lines after `l32r register, ...`) the loaded callee is called, when
/// nothing in between branches, is a label or directive, or mentions the register.
fn call_using(after: &[&str], register: &str) -> Option<usize> {
    for (at, line) in after.iter().enumerate().take(12) {
        let text = line.trim();
        let mut parts = text.splitn(2, char::is_whitespace);
        let mnemonic = parts.next().unwrap_or("");
        let operands = parts.next().unwrap_or("");
        let mentions = operands.split(|c: char| c == ',' || c.is_whitespace()).any(|op| op == register);
        if mnemonic == "callx0" {
            return (operands.trim() == register).then_some(at);
        }
        let control = mnemonic.starts_with('b')
            || mnemonic.starts_with('j')
            || mnemonic.starts_with("ret")
            || mnemonic.starts_with("call")
            || mnemonic.starts_with("loop");
        if text.is_empty() || text.starts_with('.') || is_label(line) || control || mentions {
            return None;
        }
    }
    None
}

/// `.literal LABEL, VALUE`.
fn literal(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix(".literal")?.strip_prefix([' ', '\t'])?;
    let (label, value) = rest.split_once(',')?;
    Some((label.trim(), value.trim()))
}

fn section_name(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(".section")?;
    let name = rest.trim().split(',').next()?.trim();
    Some(name.trim_matches('"'))
}

fn flush<'a>(out: &mut Vec<&'a str>, pending: &mut Vec<&'a str>, at: usize) {
    if pending.is_empty() {
        return;
    }
    out.splice(at..at, pending.drain(..));
}

fn is_section_directive(text: &str) -> bool {
    text == ".text" || text.starts_with(".text\t") || text.starts_with(".section")
}

/// Literals may only move into code sections; a data section keeps its bytes to itself.
fn is_code_section(text: &str) -> bool {
    let Some(rest) = text.strip_prefix(".section") else {
        return true; // `.text`
    };
    let mut parts = rest.trim().splitn(3, ',');
    let name = parts.next().unwrap_or("").trim().trim_matches('"');
    let flags = parts.next().unwrap_or("").trim().trim_matches('"');
    flags.contains('x') || [".text", ".iram", ".irom"].iter().any(|prefix| name.starts_with(prefix))
}

/// A label definition: `name:` at the start of a line (directives and instructions are
/// indented in LLVM's output).
fn is_label(line: &str) -> bool {
    let first = line.chars().next();
    matches!(first, Some(c) if !c.is_whitespace() && c != '#') && line.trim_end().ends_with(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shape of rustc's output for lx106 (from a real build).
    const LLVM_OUTPUT: &str = "\t.file\t\"proto\"
\t.literal_position
\t.literal .LCPI0_0, COUNTER
\t.literal .LCPI0_1, __udivsi3
\t.text
\t.section\t.text.main,\"ax\",@progbits
\t.global\tmain
\t.p2align\t2
\t.type\tmain,@function
main:
\tl32r\ta8, .LCPI0_1
.LBB0_2:
\tret
\t.size\tmain, .Lfunc_end0-main

\t.literal_position
\t.literal .LCPI2_0, panic_fmt
\t.section\t.text.unlikely.panic_fmt,\"ax\",@progbits
\t.section\t.text.unlikely.div_by_zero,\"ax\",@progbits
\t.p2align\t2
div_by_zero:
\tl32r\ta8, .LCPI2_0
\t.section\t.data.COUNTER,\"aw\",@progbits
COUNTER:
\t.word 5
";

    #[test]
    fn moves_each_group_after_its_function_section() {
        let fixed = place_literals(LLVM_OUTPUT);
        let lines: Vec<&str> = fixed.lines().map(str::trim).collect();
        let main_section = lines.iter().position(|l| l.starts_with(".section\t.text.main")).unwrap();
        assert_eq!(lines[main_section + 1], ".literal_position");
        assert_eq!(lines[main_section + 2], ".literal .LCPI0_0, COUNTER");
        assert_eq!(lines[main_section + 3], ".literal .LCPI0_1, __udivsi3");
        assert_eq!(lines[main_section + 4], ".global\tmain");

        let own = lines.iter().position(|l| l.starts_with(".section\t.text.unlikely.div_by_zero")).unwrap();
        assert_eq!(lines[own + 1], ".literal_position");
        assert_eq!(lines[own + 2], ".literal .LCPI2_0, panic_fmt");
        let previous =
            lines.iter().position(|l| l.starts_with(".section\t.text.unlikely.panic_fmt")).unwrap();
        assert_eq!(previous + 1, own, "nothing left in the previous function's section");
    }

    #[test]
    fn keeps_every_line_exactly_once() {
        let fixed = place_literals(LLVM_OUTPUT);
        let mut before: Vec<&str> = LLVM_OUTPUT.lines().collect();
        let mut after: Vec<&str> = fixed.lines().collect();
        before.sort_unstable();
        after.sort_unstable();
        assert_eq!(before, after);
    }

    #[test]
    fn never_moves_literals_into_data() {
        let asm = "\t.literal_position\n\t.literal .L1, 5\n\t.section\t.data.x,\"aw\",@progbits\nx:\n";
        assert_eq!(place_literals(asm), asm, "no code section: the group stays where it was");
    }

    #[test]
    fn jump_tables_move_to_irom_and_other_constants_stay() {
        let asm = "\t.section\t.rodata.main,\"a\",@progbits
\t.p2align\t2, 0x0
.LJTI14_0:
\t.long\t.LBB14_15
\t.long\t.LBB14_213

\t.section\t.rodata.other,\"a\",@progbits
.LJTI3_0:
\t.long\t.LBB3_1
\t.section\t.text.f,\"ax\",@progbits
f:
\t.section\t.rodata.other,\"a\",@progbits
\t.ascii\t\"text\"
\t.section\t.rodata.main,\"a\",@progbits
";
        let fixed = jump_tables_to_irom(asm);
        assert_eq!(
            fixed.matches(".section\t.irom0.text.jump_tables.main,\"a\",@progbits").count(),
            2,
            "{fixed}"
        );
        assert_eq!(
            fixed.matches(".section\t.rodata.other,").count(),
            2,
            "mixed content stays in DRAM: {fixed}"
        );
        assert_eq!(fixed.lines().count(), asm.lines().count());
    }

    #[test]
    fn calls_through_literals_become_call0_and_their_literals_go() {
        let asm = "\t.section\t.text.f,\"ax\",@progbits
\t.literal_position
\t.literal .LCPI0_0, helper
\t.literal .LCPI0_1, 1073761052
\t.literal .LCPI0_2, .Lswitch.table.f
\t.literal .LCPI0_3, other
\t.literal .LCPI0_4, helper
f:
\tl32r\ta8, .LCPI0_0
\tcallx0\ta8
\tl32r\ta8, .LCPI0_1
\tcallx0\ta8
\tl32r\ta9, .LCPI0_2
\tl32r\ta8, .LCPI0_3
.LBB0_1:
\tcallx0\ta8
\tl32r\ta8, .LCPI0_4
\tcallx0\ta9
\tl32r\ta8, .LCPI0_0
\tor\ta2, a12, a12
\ts32i\ta3, a1, 28
\tcallx0\ta8
\tl32r\ta8, .LCPI0_0
\tmov.n\ta3, a8
\tcallx0\ta8
\tl32r\ta8, .LCPI0_0
\tbeqz\ta2, .LBB0_1
\tcallx0\ta8
\tret
";
        let fixed = direct_calls(asm);
        let lines: Vec<&str> = fixed.lines().map(str::trim).collect();
        let body = &lines[lines.iter().position(|l| *l == "f:").unwrap() + 1..];
        assert_eq!(
            body,
            [
                "call0\thelper",
                "l32r\ta8, .LCPI0_1",
                "callx0\ta8",
                "l32r\ta9, .LCPI0_2",
                "l32r\ta8, .LCPI0_3",
                ".LBB0_1:",
                "callx0\ta8",
                "l32r\ta8, .LCPI0_4",
                "callx0\ta9",
                "or\ta2, a12, a12",
                "s32i\ta3, a1, 28",
                "call0\thelper",
                "l32r\ta8, .LCPI0_0",
                "mov.n\ta3, a8",
                "callx0\ta8",
                "l32r\ta8, .LCPI0_0",
                "beqz\ta2, .LBB0_1",
                "callx0\ta8",
                "ret",
            ],
            "a ROM address, a branch target between load and call, another register, the \
             register read in between, a branch in between: kept; argument set-up in between: call0"
        );
        assert!(fixed.contains(".literal .LCPI0_0, helper"), "still loaded twice: {fixed}");
        assert!(!fixed.contains(".literal .LCPI0_4,") || fixed.contains(".LCPI0_4\n"), "{fixed}");
        for kept in
            [".literal .LCPI0_1, 1073761052", ".literal .LCPI0_2, .Lswitch", ".literal .LCPI0_3, other"]
        {
            assert!(fixed.contains(kept), "{kept}: {fixed}");
        }
    }

    #[test]
    fn text_without_literals_is_unchanged() {
        let asm = "\t.text\nf:\n\tret\n";
        assert_eq!(place_literals(asm), asm);
    }
}
