"""Train and test a model with recbole_dns; flags as RecBole's run_recbole.py.

    python run_recbole_dns.py                                   # BPR_DNS on the embedded ml-100k
    python run_recbole_dns.py --model=SimGCL_DNS --dataset=ml-1m
    python run_recbole_dns.py --model=BPR --dataset=ml-100k --dns=true --dns_n=5 --dns_k=50
    python run_recbole_dns.py --model=LightGCN_DNS --nproc=2               # 2 processes (torch DDP)
"""

from recbole_dns.cli import main

if __name__ == "__main__":
    main()
