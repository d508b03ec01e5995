//! `minipay completions SHELL` through the real binary: a script for bash,
//! zsh and fish that knows the commands, a bash script that bash accepts and
//! that completes subcommands, and a clear refusal of an unknown shell.

use std::process::{Command, Output};

fn minipay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_minipay"))
        .args(args)
        .output()
        .unwrap()
}

fn script(shell: &str) -> String {
    let output = minipay(&["completions", shell]);
    assert!(
        output.status.success(),
        "completions {shell} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn bash_exists() -> bool {
    Command::new("bash")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// What bash's completion function offers after `words` (the last one the
/// word being completed, possibly empty), with the script sourced.
fn bash_offers(script_path: &std::path::Path, words: &[&str]) -> Vec<String> {
    let current = words.len() - 1;
    let previous = if current == 0 { "" } else { words[current - 1] };
    let quoted: Vec<String> = words.iter().map(|word| format!("'{word}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={current}\n_minipay minipay '{}' '{previous}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script_path.display(),
        quoted.join(" "),
        words[current],
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{words:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn each_shell_gets_a_script_naming_the_minipay_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = script(shell);
        assert!(script.contains("minipay"), "{shell}");
        for command in ["pay", "bench", "wal", "login", "completions", "certs"] {
            assert!(
                script.contains(command),
                "the {shell} script does not mention `{command}`"
            );
        }
        // The wal tools' own subcommands are completed too.
        for command in ["dump", "verify"] {
            assert!(script.contains(command), "{shell}: {command}");
        }
    }
}

#[test]
fn the_bash_script_parses_and_completes_subcommands_and_their_flags() {
    if !bash_exists() {
        eprintln!("bash is not installed: the bash script's syntax and completions are not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("minipay.bash");
    std::fs::write(&path, script("bash")).unwrap();

    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n refused the script: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );

    assert_eq!(bash_offers(&path, &["minipay", "pa"]), ["pay"]);
    let wal = bash_offers(&path, &["minipay", "wal", ""]);
    for command in ["dump", "verify", "bench", "disk"] {
        assert!(wal.iter().any(|offered| offered == command), "{wal:?}");
    }
    assert!(!wal.iter().any(|offered| offered == "pay"), "{wal:?}");
    let pay = bash_offers(&path, &["minipay", "pay", "--"]);
    for flag in ["--to", "--amount", "--txn-id", "--gateway"] {
        assert!(pay.iter().any(|offered| offered == flag), "{pay:?}");
    }
}

#[test]
fn an_unknown_shell_is_refused_with_the_shells_that_exist() {
    let output = minipay(&["completions", "tcsh"]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("invalid value 'tcsh'"), "{error}");
    for shell in ["bash", "zsh", "fish"] {
        assert!(error.contains(shell), "{error}");
    }
}
