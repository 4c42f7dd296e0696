from recbole_dns.experiments import main

main()
