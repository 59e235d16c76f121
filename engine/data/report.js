(function(){
const $=id=>document.getElementById(id);
const key={dur:c=>-c.dataset.dur,face:c=>-c.dataset.face,yaw:c=>+c.dataset.yaw,time:c=>+c.dataset.start};
function apply(){
 const md=+$('mindur').value||0,mf=+$('minface').value||0,my=$('maxyaw').value===''?180:+$('maxyaw').value;
 const q=$('srcq').value.trim().toLowerCase(),by=key[$('sort').value];let n=0;
 for(const s of document.querySelectorAll('section.src')){
  const hit=!q||s.dataset.name.includes(q);s.hidden=!hit;
  for(const c of s.querySelectorAll('.card')){
   const ok=hit&&+c.dataset.dur>=md&&+c.dataset.face>=mf&&+c.dataset.yaw<=my;c.hidden=!ok;if(ok)n++;}
  const g=s.querySelector('.srcbody>.grid');if(!g)continue;
  const items=[...g.children],first=el=>el.classList.contains('card')?el:el.querySelector('.card');
  items.sort((a,b)=>by(first(a))-by(first(b))||first(a).dataset.start-first(b).dataset.start);
  for(const el of items)g.appendChild(el);}
 $('shown').textContent=n+' clips shown';}
for(const id of ['sort','mindur','minface','maxyaw','srcq'])$(id).addEventListener('input',apply);
$('openall').addEventListener('click',()=>{for(const d of document.querySelectorAll('details.srcbody'))d.open=true;});
apply();
addEventListener('load',()=>{document.documentElement.dataset.loadedMs=Math.round(performance.now());});})();
