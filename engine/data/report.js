(function(){
// The filter/sort bar. It reads only numbers from data-* attributes (cards: start,
// dur, face, yaw, score, person; faces: pid) and each source's lower-cased path
// as text, never markup. Grouping moves the card elements between containers:
// their own place in their source, one grid for all (#all), or their person's
// grid (section[data-pid], #p-none). The query string may set the bar's initial
// state: index.html?group=none&minscore=60&person=2
const $=id=>document.getElementById(id);
if(!$('bar'))return;
const ids=['sort','group','person','minscore','mindur','minface','maxyaw','srcq'];
const cards=[...document.querySelectorAll('.card')];
const home=new Map(cards.map(c=>[c,c.parentElement]));
const name=new Map(cards.map(c=>[c,c.closest('section.src').dataset.name]));
const pos=new Map(cards.map((c,i)=>[c,i]));  // page order: source, then time
const score=c=>c.dataset.score===undefined?-1:+c.dataset.score;  // no score (older plans): last
const key={score:c=>-score(c),dur:c=>-c.dataset.dur,face:c=>-c.dataset.face,yaw:c=>+c.dataset.yaw,
 time:c=>pos.get(c)};
const all=$('all'),nobody=$('p-none'),faces=[...document.querySelectorAll('button.face')];
const persons=new Map([...document.querySelectorAll('section[data-pid]')].map(s=>[s.dataset.pid,s]));
const grid=s=>s.querySelector('.grid'),shows=s=>!!s.querySelector('.card:not([hidden])');
if(!nobody){$('who').hidden=true;$('group').querySelector('option[value=person]').disabled=true;}
function place(mode,order){
 const sorted=cards.slice().sort(order);
 if(mode==='none'){const g=grid(all);for(const c of sorted)g.appendChild(c);return;}
 if(mode==='person'){for(const c of sorted)grid(persons.get(c.dataset.person)||nobody).appendChild(c);return;}
 for(const c of cards)if(c.parentElement!==home.get(c))home.get(c).appendChild(c);
 for(const g of document.querySelectorAll('.group>.grid'))  // a long shot's parts: in time order
  for(const c of [...g.children].sort((a,b)=>pos.get(a)-pos.get(b)))g.appendChild(c);
 for(const g of document.querySelectorAll('.srcbody>.grid')){  // a group ranks by its best part
  const best=el=>el.classList.contains('card')?el:[...el.querySelectorAll('.card')].sort(order)[0];
  const items=[...g.children].map(el=>[best(el),el]).sort((a,b)=>order(a[0],b[0]));
  for(const [,el] of items)g.appendChild(el);}}
function apply(){
 const md=+$('mindur').value||0,mf=+$('minface').value||0,ms=+$('minscore').value||0,
  my=$('maxyaw').value===''?180:+$('maxyaw').value,who=$('person').value,q=$('srcq').value.trim().toLowerCase(),
  by=key[$('sort').value]||key.score,mode=$('group').value==='person'&&!nobody?'source':$('group').value;
 const order=(a,b)=>by(a)-by(b)||pos.get(a)-pos.get(b);
 let n=0;
 for(const c of cards){
  const ok=(!q||name.get(c).includes(q))&&+c.dataset.dur>=md&&+c.dataset.face>=mf&&+c.dataset.yaw<=my&&
   (ms<=0||score(c)>=ms)&&(!who||c.dataset.person===who);
  c.hidden=!ok;if(ok)n++;}
 place(mode,order);
 document.body.dataset.group=mode;  // cards outside their source name it (CSS)
 for(const s of document.querySelectorAll('section.src'))
  s.hidden=mode!=='source'||(!!q&&!s.dataset.name.includes(q))||(!!who&&!shows(s));
 all.hidden=mode!=='none';
 for(const s of [...persons.values(),nobody])if(s)s.hidden=mode!=='person'||!shows(s);
 for(const f of faces)f.setAttribute('aria-pressed',String(f.dataset.pid===who));
 $('shown').textContent=n+' clips shown';}
const init=new URLSearchParams(location.search);
for(const id of ids){
 const el=$(id),v=init.get(id);
 if(v!==null&&(el.tagName!=='SELECT'||[...el.options].some(o=>o.value===v&&!o.disabled)))el.value=v;}
for(const id of ids)$(id).addEventListener('input',apply);
for(const f of faces)f.addEventListener('click',()=>{
 const p=$('person');p.value=p.value===f.dataset.pid?'':f.dataset.pid;apply();});
$('openall').addEventListener('click',()=>{for(const d of document.querySelectorAll('details.srcbody'))d.open=true;});
apply();
addEventListener('load',()=>{document.documentElement.dataset.loadedMs=Math.round(performance.now());});})();
