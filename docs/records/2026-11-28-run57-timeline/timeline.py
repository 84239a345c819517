# Summarize a clock64 timeline of block 0, group 0 (fused3d with exp/instrumented kernel, FUSED3D_TRACE=1).
import collections, statistics as st, sys
for path in sys.argv[1:]:
    ms = collections.defaultdict(dict); mi = collections.defaultdict(dict); ps = collections.defaultdict(dict)
    for l in open(path):
        f = l.split()
        if not f: continue
        if f[0] == 'mstep': ms[int(f[1])][int(f[2])] = list(map(int, f[3:]))
        if f[0] == 'mitem': mi[int(f[1])][int(f[2])] = list(map(int, f[3:]))
        if f[0] == 'pstep': ps[int(f[1])][int(f[2])] = list(map(int, f[3:]))
    print("=====", path)
    S = range(12, 90)   # steady-state steps (items 4..29)
    I = range(4, 30)
    m = lambda v: f"{st.mean(v):6.0f}"
    for w in range(6):
        wait = [ms[w][s][1] - ms[w][s][0] for s in S]
        loop = [ms[w][s][2] - ms[w][s][1] for s in S]
        gap = [ms[w][s + 1][0] - ms[w][s][2] for s in S if (s + 1) % 3 != 0]
        stats = [mi[w][i][1] - mi[w][i][0] for i in I]
        merge = [mi[w][i][2] - mi[w][i][1] for i in I]
        tail = [ms[w][3 * i + 3][0] - mi[w][i][2] for i in I]
        period = (ms[w][89][0] - ms[w][11][0]) / 78
        line = (f"mma warp {w}: per step  wait {m(wait)}  loop {m(loop)}  gap {m(gap)} | per item  statistics {m(stats)}"
                f"  merge {m(merge)}  tail {m(tail)} | step period {period:6.0f}")
        if len(mi[w][4]) >= 6:
            pre = [mi[w][i][3] - mi[w][i][0] for i in I]; rows = [mi[w][i][4] - mi[w][i][3] for i in I]
            red = [mi[w][i][5] - mi[w][i][4] for i in I]; post = [mi[w][i][1] - mi[w][i][5] for i in I]
            line += f"\n             statistics = to pivots {m(pre)} + rows {m(rows)} + lane sums/division {m(red)} + slot write/arrive {m(post)}"
        print(line)
    for w in range(2):
        a = [ps[w][s][1] - ps[w][s][0] for s in S]; b = [ps[w][s][2] - ps[w][s][1] for s in S]
        c = [ps[w][s][3] - ps[w][s][2] for s in S]; d = [ps[w][s][4] - ps[w][s][3] for s in S]
        print(f"producer warp {w}: per step  stage+landed {m(a)}  drained wait {m(b)}  convert {m(c)}  barrier {m(d)}")
    lead = [ms[0][s][0] - ps[0][s][3] for s in S]
    print(f"MMA warp 0 reaches step s {st.mean(lead):.0f} cycles (min {min(lead)}) after the producers converted it")
