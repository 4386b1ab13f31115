import numpy as np, torch, glob, sys
torch.set_num_threads(1)
from benchmarks import pg_task as T
spec = T.TaskSpec()
tok, model = T.build(spec, 0)
path = sys.argv[1]
model.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
codec = T.Codec(tok)
pool, held = T.make_sets(spec, "balanced", 3000, 10, 5)
acc = T.accuracy(model, codec, pool, 8, spec.max_new_tokens, 1)
tp = T.true_pass_rate(model, codec, pool)
L = np.array([r["length"] for r in pool]); S = np.array([r["shift"] for r in pool])
for l in sorted(set(L)):
    m = L==l; a=acc[m]
    print(l, "sampled", round(a.mean(),2), "tf", round(tp[m].mean(),2), "useful8", round(np.mean((a>0)&(a<1)),2), "hist", np.histogram(a, bins=[0,.01,.15,.5,.85,.99,1.01])[0], "by shift", [round(a[S[m]==s].mean(),2) for s in range(1,5)])
