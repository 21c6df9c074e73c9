"""An allocation-heavy Python workload with deterministic output.

tests/preload.rs runs it with and without cpuslab preloaded (with PYTHONMALLOC=malloc,
so every object, small ones included, comes from the C allocator) and compares the
output byte for byte.
"""

import hashlib
import json
import random
import re
import threading
from collections import Counter, defaultdict, deque


class Node:
    __slots__ = ("key", "children", "payload")

    def __init__(self, key, payload):
        self.key = key
        self.children = []
        self.payload = payload


def build_tree(rng, depth, fanout):
    root = Node(0, b"")
    frontier = deque([(root, 0)])
    count = 1
    while frontier:
        node, d = frontier.popleft()
        if d == depth:
            continue
        for _ in range(fanout):
            child = Node(count, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
            node.children.append(child)
            frontier.append((child, d + 1))
            count += 1
    return root, count


def tree_digest(root):
    h = hashlib.sha256()
    stack = [root]
    while stack:
        node = stack.pop()
        h.update(node.key.to_bytes(4, "little"))
        h.update(node.payload)
        stack.extend(node.children)
    return h.hexdigest()[:16]


def strings(rng):
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randrange(1, 12))) for _ in range(40000)]
    text = " ".join(words)
    counts = Counter(re.findall(r"[a-e]+", text))
    joined = "|".join(sorted(set(words)))
    return len(text), len(counts), counts.most_common(3), hashlib.md5(joined.encode()).hexdigest()[:12]


def documents(rng):
    docs = []
    for i in range(6000):
        docs.append({
            "id": i,
            "tags": [rng.choice(["a", "b", "c", "d"]) * rng.randrange(1, 5) for _ in range(rng.randrange(0, 6))],
            "scores": [rng.random() for _ in range(rng.randrange(1, 20))],
            "nested": {"name": f"doc-{i}", "size": rng.randrange(10**6)},
        })
    blob = json.dumps(docs, sort_keys=True)
    back = json.loads(blob)
    by_tag = defaultdict(list)
    for d in back:
        for t in d["tags"]:
            by_tag[t].append(d["id"])
    return len(blob), sorted((k, len(v)) for k, v in by_tag.items())


def churn(rng):
    live = {}
    total = 0
    for i in range(100000):
        k = rng.randrange(5000)
        if k in live:
            total += len(live.pop(k))
        else:
            live[k] = bytearray(rng.randrange(1, 3000))
    big = [bytes(rng.randrange(1, 1 << 20)) for _ in range(20)]
    return total, len(live), sum(map(len, big))


def threaded(seed):
    results = [None] * 4

    def run(i):
        rng = random.Random(seed + i)
        results[i] = sum(len(str(rng.random()) * 3) for _ in range(20000))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


def main():
    rng = random.Random(1234)
    root, count = build_tree(rng, 7, 5)
    print("tree", count, tree_digest(root))
    del root
    print("strings", *strings(rng))
    print("documents", *documents(rng))
    print("churn", *churn(rng))
    print("threads", threaded(99))


main()
