-- Population and city count per province, from the seed.
select province,
       count(*)        as cities,
       sum(population) as population
from {{ ref('cities') }}
group by province
