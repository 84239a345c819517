# Checks the planes kernel's stream arithmetic (7bc625a: block_planes, segment_of, produce_planes,
# consume_planes) on the host, in Python: every output plane is computed once; a plane's two pair
# planes are the right input planes; the items recorded as a pair plane's readers are its readers;
# no consumer waits on a pair-plane slot that has yet to take its previous pair plane; the producer
# never waits for an item that needs a pair plane it has yet to write; a done barrier never turns
# over before the producer waited for it. For B 64-4096, OD 6-20, 1-132 blocks.
#   python3 planes_stream_check.py
# Mirrors the planes kernel's stream arithmetic (block_planes, segment_of, produce/consume indexing).
R, DR, WG = 10, 16, 3
def check(B, ods, grid):
    total = B * ods
    seen = set()
    for blk in range(grid):
        start = total * blk // grid; end = total * (blk + 1) // grid; count = end - start
        if count == 0: continue
        first = start // ods
        def seg_of(seg):
            n = first + seg; f = n * ods
            return n, max(start, f) - f, min(end, f + ods) - f
        segments = (end - 1) // ods - first + 1
        # producer: pairs in order
        pairs = []; users = {}
        q = 0; inputs_seq = []
        for seg in range(segments):
            n, b, e = seg_of(seg)
            for i in range(b, e + 3): inputs_seq.append((n, i))
            for pl in range(b, e + 2):
                at = n * ods + pl - start
                fi = at + 3 * seg
                assert inputs_seq[fi] == (n, pl) and (fi + 1 >= len(inputs_seq) or True)
                pairs.append((n, pl))
                assert q == at + 2 * seg
                u = [at // 2 if pl < e else -1, (at - 2) // 2 if pl - 2 >= b else -1]
                users[q] = u
                q += 1
        # inputs count
        assert len(inputs_seq) == count + 3 * segments
        for fi_n in range(len(pairs)):
            pass
        # consumer
        def locate(at):
            n = (start + at) // ods; od = start + at - n * ods; return n, od, at + 2 * (n - first)
        maxpair = {}
        for k in range((count + 1) // 2):
            mp = -1
            for h in range(2):
                at = min(2 * k + h, count - 1)
                n, od, qq = locate(at)
                assert pairs[qq] == (n, od) and pairs[qq + 2] == (n, od + 2), (B, ods, grid, blk, at)
                if 2 * k + h < count:
                    seen.add(n * ods + od)
                    assert n * ods + od == start + 2 * k + h
                    # users of qq and qq+2 include this item
                    assert k in users[qq] and k in users[qq + 2], (users[qq], users[qq+2], k)
                mp = max(mp, qq + 2)
            maxpair[k] = mp
        # consumer parity safety: item k+WG's pairs - R <= pairs written before (item k's max)
        for k in maxpair:
            if k - WG in maxpair: assert maxpair[k] - R <= maxpair[k - WG], (B, ods, grid, k)
            elif k < WG: assert maxpair[k] < R + 0 or True
            if k < WG: assert maxpair[k] < R, (k, maxpair[k])
        # producer deadlock: slot reuse q -> users' items need pairs < q + R (written before)
        for qq, u in users.items():
            for it in u:
                if it >= 0 and qq + R < len(pairs): assert maxpair[it] < qq + R, (qq, it, maxpair[it])
        # done ring: producer waits item `it` at pair qq+R; item it+DR's min pair must be > qq+R
        for qq, u in users.items():
            for it in u:
                if it >= 0 and it + DR in maxpair and qq + R < len(pairs):
                    n, od, q0 = locate(2 * (it + DR)); assert q0 > qq + R
    assert seen == set(range(total)), (B, ods, grid)
import itertools
for B, ods, grid in itertools.product([512, 529, 600, 1024, 1031, 4096], [6, 7, 13, 20], [132, 114, 1, 7]):
    check(B, ods, grid)
print("ok")
for B in [64, 65, 100, 128, 200, 256, 333, 511]:
    for ods in [6, 7, 13]:
        check(B, ods, 132)
print("ok small")
