-- Each province's share of the seed's population; depends on province_population.
select province,
       population,
       round(100.0 * population / sum(population) over (), 2) as share_pct
from {{ ref('province_population') }}
