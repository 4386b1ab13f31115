import numpy as np, torch, sys
torch.set_num_threads(1)
from benchmarks import pg_task as T, pg_methods as M
spec = T.TaskSpec()
tok, model = T.build(spec, 0)
import glob, os
path = sorted(glob.glob("benchmarks/results/cache/pg/pg-seed-*.pt"), key=os.path.getmtime)[-1]
model.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
codec = T.Codec(tok)
pool, held = T.make_sets(spec, "balanced", 400, 10, 5)
rows = [r for r in pool if r["length"] == 4][:16]
size = {"group": 8, "prompts_per_step": 16, "lr": float(sys.argv[1]), "ds_max_draws": 1}
run = M.GRPOArm(model, codec, rows, spec, size, 0)
g = torch.Generator().manual_seed(5)
print("start", T.measured_pass_rate(model, codec, rows, 16, spec.max_new_tokens, g).mean())
for i in range(30):
    run.step()
    if i % 10 == 9:
        print(i, T.measured_pass_rate(model, codec, rows, 16, spec.max_new_tokens, g).mean(), run.ledger.useful_groups)
