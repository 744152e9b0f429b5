// --version and --help (-h), each with one dash or two; they print and exit 0.
// RUN: tessera-opt --version | filecheck %s --check-prefix=VERSION
// RUN: tessera-opt -version | filecheck %s --check-prefix=VERSION
// RUN: tessera-opt --help | filecheck %s --check-prefix=HELP
// RUN: tessera-opt -help | filecheck %s --check-prefix=HELP
// RUN: tessera-opt -h | filecheck %s --check-prefix=HELP
// RUN: not tessera-opt --version -no-such-pass 2>&1 | filecheck %s --check-prefix=CHECKED

// VERSION: tessera-opt (Tessera {{[0-9]+\.[0-9]+.*}})
// VERSION-NEXT: MLIR Python bindings: {{.+}} {{[0-9]+\.[0-9]+.*}}
// HELP: USAGE: tessera-opt [options] <input file>
// HELP: -o <filename>
// HELP: --pass-pipeline, -p <pipeline>
// HELP: --split-input-file[=<marker>]
// HELP: --verify-each[=true|false]
// HELP: --mlir-print-ir-after-change
// HELP: --emit-bytecode
// HELP: --help, -h
// HELP: --<pass>[=<options>]
// CHECKED: tessera-opt: error: unknown option '-no-such-pass'
