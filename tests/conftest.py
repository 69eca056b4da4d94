import os, tempfile
import torch

# Tests never touch the user's run store: one scratch TICKETLAB_HOME per test session (decoded data
# sets are cached there once and shared by the session's tests). Tests that check the store pass their
# own Store(tmp_path).
os.environ['TICKETLAB_HOME'] = tempfile.mkdtemp(prefix='ticketlab-test-home-')
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
