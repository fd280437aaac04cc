#!/usr/bin/env python3
"""Rewrites CUDA launches for the CPU emulation (include/dgs_emu/emu.h).

    callee<<<grid, block, smem, stream>>>(args)
becomes
    ::dgs_emu::launch(grid, block, smem, stream).named("callee")(
        [=](auto... p) { callee(p...); }, args)

so the arguments are evaluated once, at the launch, and a kernel template's
arguments are deduced from them as in the CUDA call (the name, without
template arguments or namespaces, is what a failed launch reports:
dgs_emu::fail_launch); and each declaration

    __shared__ TYPE NAME[...];
gains, on the same line,
    static ::dgs_emu::SharedVariable dgs_emu_shared_NAME(&NAME, sizeof NAME);
    dgs_emu_shared_NAME.use();

so the runtime knows which variables each grid uses: it fills them with
0x5A before each block, and keeps each resident block's own contents when
blocks interleave (emu.h). A __shared__ declaration it cannot follow so
(several names on a line, extern, namespace scope, one in a kernels/ header
the source includes) stops the build, naming the line. Line breaks are
kept, so compiler messages point at the original lines (a #line directive
names the original file).

usage: rewrite_launches.py SOURCE OUTPUT
"""
import os
import re
import sys

SHARED = re.compile(r'^(\s*__shared__\s[^;,{}()=\[]*?\b(\w+)\s*(\[[^;]*?\])?\s*;)')


def code_lines(text):
    """Each line's code, with comments and string and character literals
    blanked out (the same length, so columns still match)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i))
            i = j
        elif text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append(''.join(ch if ch == '\n' else ' ' for ch in text[i:j]))
            i = j
        elif c in '"\'':
            j = i + 1
            while j < n and text[j] != c and text[j] != '\n':
                j += 2 if text[j] == '\\' else 1
            j = min(j + 1, n)
            out.append(c + ' ' * (j - i - 2) + (c if j - i >= 2 else ''))
            i = j
        else:
            out.append(c)
            i += 1
    return ''.join(out).split('\n')


def namespace_scope_lines(lines):
    """Per line, whether it starts outside every function and class: every
    brace open there is a namespace's (or an extern "C" block's)."""
    stack, at_namespace = [], []
    for line in lines:
        at_namespace.append(all(stack))
        for k, ch in enumerate(line):
            if ch == '{':
                head = re.split(r'[;{}]', ' '.join(lines[max(0, len(at_namespace) - 3):
                                                             len(at_namespace) - 1])
                                + ' ' + line[:k])[-1]
                stack.append(re.search(r'\bnamespace\b|\bextern\s*"', head) is not None)
            elif ch == '}' and stack:
                stack.pop()
    return at_namespace


def check_headers(text, source):
    """The kernels' own headers must not declare __shared__ variables: only
    the .cu files are rewritten, so such a variable would be neither filled
    nor kept per block when blocks interleave."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(source)))
    for header in re.findall(r'^\s*#\s*include\s+"(kernels/[^"]+)"', text, re.M):
        path = os.path.join(root, header)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for n, line in enumerate(code_lines(f.read())):
                if '__shared__' in line:
                    raise SystemExit(f"{path}:{n + 1}: a __shared__ variable in a header: the "
                                     f"emulation rewrites only the .cu files; declare it in "
                                     f"the kernel")


def register_shared(text, name):
    """Follows each __shared__ declaration with its SharedVariable. A
    declaration takes one line, names one variable and lies in a function;
    any other use of __shared__ outside a comment (several names, extern,
    alignment, namespace scope) stops the build, naming the line, rather than
    leaving a variable unfilled."""
    lines = text.split('\n')
    code = code_lines(text)
    outside = namespace_scope_lines(code)
    for n, line in enumerate(lines):
        if '__shared__' not in code[n]:
            continue
        m = SHARED.match(code[n])
        if m is None:
            raise SystemExit(f"{name}:{n + 1}: a __shared__ declaration the emulation does not "
                             f"handle (one variable per line, no extern): {line.strip()}")
        if outside[n]:
            raise SystemExit(f"{name}:{n + 1}: a __shared__ variable at namespace scope, which "
                             f"the emulation does not handle (declare it in the kernel): "
                             f"{line.strip()}")
        v = m.group(2)
        lines[n] = (line[:m.end(1)] + f" static ::dgs_emu::SharedVariable dgs_emu_shared_{v}"
                    f"(&{v}, sizeof {v}); dgs_emu_shared_{v}.use();" + line[m.end(1):])
    return '\n'.join(lines)


def callee_start(text, end):
    """Start of the callee expression that ends just before `end`."""
    i = end
    while i > 0 and text[i - 1].isspace():
        i -= 1
    if i > 0 and text[i - 1] == '>':  # template arguments: match the brackets back
        depth = 0
        while i > 0:
            i -= 1
            if text[i] == '>':
                depth += 1
            elif text[i] == '<':
                depth -= 1
                if depth == 0:
                    break
        while i > 0 and text[i - 1].isspace():
            i -= 1
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in '_:'):
        i -= 1
    return i


def matching(text, start, open_ch, close_ch):
    """Index of the bracket closing the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i
    raise SystemExit(f"unbalanced {open_ch}{close_ch} after offset {start}")


def rewrite(text, name):
    out = []
    pos = 0
    while True:
        at = text.find('<<<', pos)
        if at < 0:
            break
        begin = callee_start(text, at)
        callee = text[begin:at].strip()
        if not callee:
            raise SystemExit(f"{name}: no kernel before the launch at offset {at}")
        close = text.find('>>>', at + 3)
        if close < 0:
            raise SystemExit(f"{name}: no >>> after offset {at}")
        config = text[at + 3:close]
        paren = close + 3
        while text[paren].isspace():
            paren += 1
        if text[paren] != '(':
            raise SystemExit(f"{name}: no argument list after the launch of {callee}")
        end = matching(text, paren, '(', ')')
        args = text[paren + 1:end]
        out.append(text[pos:begin])
        sep = ', ' if args.strip() else ''
        kernel = callee.split('<')[0].split('::')[-1].strip()
        out.append(f"::dgs_emu::launch({config}).named(\"{kernel}\")"
                   f"([=](auto... dgs_emu_p) {{ {callee}(dgs_emu_p...); }}{sep}{args})")
        pos = end + 1
    out.append(text[pos:])
    return ''.join(out)


def main():
    source, output = sys.argv[1], sys.argv[2]
    with open(source) as f:
        text = f.read()
    check_headers(text, source)
    result = register_shared(rewrite(text, source), source)
    with open(output, 'w') as f:
        f.write(f'#line 1 "{source}"\n')
        f.write(result)


if __name__ == '__main__':
    main()
