# N log lines that are all distinct templates (letters-only words, so masking
# cannot merge them): `python3 scripts/distinct_lines.py 2000000 > lines.txt`.
# Used for the max_templates memory figures in the README.
import sys
n = int(sys.argv[1])
L = "abcdefghijklmnopqrstuvwxyz"
def enc(i):
    s = []
    while True:
        s.append(L[i % 26]); i //= 26
        if i == 0: return "".join(s)
out = sys.stdout
for i in range(n):
    out.write(f"q{enc(i)} start {enc(i * 7 + 3)}y session {enc(i * 13 + 5)}z\n")
